"""files: atomic writes leave the old file or the new one; digests see every changed byte."""

import os

import pytest

from alphaprune import files


def test_a_write_cut_short_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "summary.json"
  files.write_json(str(path), {"done": 1})

  def full_disk(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.raises(OSError):
    files.write_json(str(path), {"done": 2})
  assert files.read_json(str(path)) == {"done": 1}
  assert sorted(os.listdir(tmp_path)) == ["summary.json"]  # no temporary left behind


def test_read_json_takes_a_damaged_file_as_absent(tmp_path):
  (tmp_path / "half.json").write_text('{"a": ')
  assert files.read_json(str(tmp_path / "half.json"), "absent") == "absent"
  assert files.read_json(str(tmp_path / "missing.json")) is None


def test_a_digest_sees_a_flipped_byte_a_renamed_and_a_missing_file(tmp_path):
  folder = tmp_path / "checkpoint"
  (folder / "sub").mkdir(parents=True)
  (folder / "a").write_bytes(b"abc")
  (folder / "sub" / "b").write_bytes(b"xyz")
  before = files.digest(str(folder))
  assert files.digest(str(folder)) == before
  (folder / "a").write_bytes(b"abd")
  flipped = files.digest(str(folder))
  (folder / "a").write_bytes(b"abc")
  assert files.digest(str(folder)) == before != flipped
  (folder / "a").rename(folder / "c")
  assert files.digest(str(folder)) != before
  os.remove(folder / "c")
  assert files.digest(str(folder)) != before
  assert files.size_bytes(str(folder)) == 3
