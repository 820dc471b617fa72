"""Faults planted on the smoke config, and what the run does about each: flipped bytes are
caught, the lock holds, damaged side files are rebuilt, a full disk and Ctrl-C are one line
and leave the workdir resumable. Every resumed run ends as the uninterrupted one did."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alphaprune import checkpoint, compare, export, jobs, train
from alphaprune import workdir as workdir_lib
from alphaprune.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import fashion_mnist  # noqa: E402

EXAMPLES = 120


def _config(tmp_path, **overrides):
  config = fashion_mnist.get_config("smoke")
  config.data.update(data_dir=str(tmp_path / "tfds"), prepare=True, manual_dir="")
  config.checkpoint.keep = 3
  config.update_from_flattened_dict(overrides)
  return config


def _run(config, workdir):
  with tfds.testing.mock_data(num_examples=EXAMPLES):
    return train.run(config, str(workdir))


def _strip(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


def _same_run(a, b):
  """Two workdirs that hold the same run: every epoch's metrics and the export, exactly."""
  assert _strip(a) == _strip(b)
  x, _ = checkpoint.load_model(str(a / "export"))
  y, _ = checkpoint.load_model(str(b / "export"))
  for left, right in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
    np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted smoke run every fault is planted on a copy of."""
  root = tmp_path_factory.mktemp("faults")
  summary = _run(_config(root), root / "run")
  return root, root / "run", summary


def _copy(reference, tmp_path):
  _, run, _ = reference
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


def _flip(path, offset=64):
  """Flips the bytes at `offset` of the largest file under `path` (its size unchanged)."""
  files = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
  target = max(files, key=os.path.getsize)
  with open(target, "r+b") as f:
    f.seek(min(offset, os.path.getsize(target) - 1))
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  return target


def _newest(run, phase="prune"):
  folder = run / "checkpoints" / phase
  return folder / str(max(int(p.name) for p in folder.iterdir() if p.name.isdigit()))


def test_a_flipped_byte_in_the_newest_checkpoint_is_skipped_and_the_run_ends_the_same(
    reference, tmp_path, capsys):
  root, _, summary = reference
  run = _copy(reference, tmp_path)
  newest = _newest(run)
  _flip(newest)
  os.remove(run / "summary.json")
  resumed = _run(_config(root), run)
  err = capsys.readouterr().err
  assert f"checkpoint {newest.name}" in err and "not the bytes that were saved" in err
  assert resumed["pruned_test_accuracy"] == summary["pruned_test_accuracy"]
  _same_run(reference[1], run)
  assert any(p.name.startswith(newest.name) for p in (run / "checkpoints" / "prune.unreadable").iterdir())


def test_a_flipped_byte_in_the_teacher_is_caught_and_the_teacher_rebuilt(reference, tmp_path,
                                                                         capsys):
  root, _, summary = reference
  run = _copy(reference, tmp_path)
  _flip(run / "teacher" / "variables")
  shutil.rmtree(run / "checkpoints" / "prune")
  os.remove(run / "summary.json")
  resumed = _run(_config(root), run)
  assert "rebuilt from checkpoints/pretrain" in capsys.readouterr().err
  assert resumed["teacher_test_accuracy"] == summary["teacher_test_accuracy"]
  _same_run(reference[1], run)


def test_a_flipped_teacher_checkpoint_given_to_a_run_is_one_line(reference, tmp_path):
  root, _, _ = reference
  run = _copy(reference, tmp_path)
  _flip(run / "teacher" / "variables")
  with pytest.raises(ConfigError, match="cannot be read.*checksum fails"):
    _run(_config(root, **{"teacher.checkpoint": str(run / "teacher")}), tmp_path / "other")
  assert not (tmp_path / "other").exists()


def test_a_flipped_byte_in_the_export_never_yields_a_summary(reference, tmp_path, monkeypatch):
  root, _, _ = reference
  run = _copy(reference, tmp_path)
  os.remove(run / "summary.json")
  save = export.export

  def save_then_flip(path, *args, **kwargs):
    saved = save(path, *args, **kwargs)
    _flip(os.path.join(path, "variables"))  # the disk returns other bytes than were written
    return saved

  monkeypatch.setattr(export, "export", save_then_flip)
  with pytest.raises(checkpoint.Corrupt):
    _run(_config(root), run)
  assert not (run / "summary.json").exists()


def test_the_lock_holds_when_its_file_is_deleted(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    os.remove(tmp_path / workdir_lib.LOCK)
    with pytest.raises(ConfigError, match="in use by"):
      workdir_lib.check_free(str(tmp_path))


def test_damaged_side_files_are_rebuilt_from_the_checkpoints(reference, tmp_path, capsys):
  root, _, summary = reference
  run = _copy(reference, tmp_path)
  stage_ends = json.loads((run / "checkpoints" / "prune" / "stage_ends.json").read_text())
  for name in ("config.json", "checkpoints/prune/stage_ends.json", "summary.json"):
    (run / name).write_text('{"half": ')  # what a kill or a full disk mid-write leaves
  assert not jobs.finished(str(run))  # compare and sweep would run it again
  resumed = _run(_config(root), run)
  assert "stage_ends.json was damaged; rebuilt from the checkpoints" in capsys.readouterr().err
  assert json.loads((run / "checkpoints" / "prune" / "stage_ends.json").read_text()) == stage_ends
  assert json.loads((run / "config.json").read_text())["prune"]["keep_ratio"] == 0.35
  assert resumed["pruned_test_accuracy"] == summary["pruned_test_accuracy"]
  _same_run(reference[1], run)


def test_a_corrected_command_runs_where_a_bad_one_failed_before_its_first_checkpoint(
    reference, tmp_path):
  root, _, _ = reference
  workdir = tmp_path / "run"
  workdir.mkdir()
  workdir_lib.write_config(_config(root, **{"prune.keep_ratio": 0.2}), str(workdir))
  summary = _run(_config(root, **{"prune.include": ("fc1/dense/kernel",)}), workdir)  # another
  assert summary["prunable_params"] < reference[2]["prunable_params"]


def _cli(workdir, data_dir, *extra, pipeline="stream"):
  env = {**os.environ, "MOCK_EXAMPLES": "1000", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={os.path.join(REPO, 'configs', 'fashion_mnist.py')}:smoke",
       f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.data.prepare=True",
       "--config.data.manual_dir=", f"--config.data.pipeline={pipeline}", *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_saves_exits_130_and_the_same_command_resumes(tmp_path):
  whole, stopped = tmp_path / "whole", tmp_path / "stopped"
  reference, proc = _cli(whole, tmp_path / "tfds"), _cli(stopped, tmp_path / "tfds")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if (stopped / "checkpoints" / "prune").exists():
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "stopped by Ctrl-C: saved prune at step" in out and "run the same command" in out
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  resumed = _cli(stopped, tmp_path / "tfds")
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0 and "resumed prune" in out, err[-2000:]
  reference.communicate(timeout=300)
  _same_run(whole, stopped)


def test_a_full_disk_is_one_line_and_the_workdir_resumes_elsewhere(tmp_path):
  small = tmp_path / "small"
  small.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(small)],
                           capture_output=True)
  if mounted.returncode:
    pytest.skip("cannot mount a small filesystem here (needs root and CAP_SYS_ADMIN): "
                + mounted.stderr.decode().strip()[:100])
  try:
    proc = _cli(small / "run", tmp_path / "tfds", pipeline="device")
    out, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if not line.startswith("W1")]  # TFDS's mock
    assert proc.returncode == 1, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: the disk is full while writing in")
    assert "MiB free" in lines[0] and "run the same command to resume" in lines[0]
    shutil.copytree(small / "run", tmp_path / "moved", ignore_dangling_symlinks=True)
  finally:
    subprocess.run(["umount", str(small)], capture_output=True)
  resumed = _cli(tmp_path / "moved", tmp_path / "tfds", pipeline="device")
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0 and "done:" in out, err[-2000:]


def test_compare_runs_a_run_whose_summary_does_not_parse_again(tmp_path, monkeypatch):
  launcher = f"{sys.executable} {os.path.join(REPO, 'tests', 'fake_main.py')}"
  args = ["--config=configs/fashion_mnist.py:smoke", "--seeds=0", f"--workdir={tmp_path}",
          "--methods=alpha_blend,one_shot", f"--launcher={launcher}"]
  monkeypatch.chdir(REPO)
  monkeypatch.setenv("FAKE_FAIL", "")
  assert compare.main(args) == 0
  summary = tmp_path / "keep_0.35" / "seed_0" / "one_shot" / "summary.json"
  summary.write_text('{"method": "one_sh')
  assert compare.main(args) == 0
  assert json.loads(summary.read_text())["method"] == "one_shot"
