"""Files written so that a kill or a full disk leaves the old one or the new one, never half,
and digests that tell whether a folder still holds the bytes it was written with."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile


def write_atomic(path: str, text: str) -> None:
  """`text` into `path` through a temporary file in the same folder, flushed to disk, then
  renamed over it: readers see the old file or the new one."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.unlink(temporary)
    raise


def write_json(path: str, value, indent: int | None = 2) -> None:
  write_atomic(path, json.dumps(value, indent=indent) + ("\n" if indent else ""))


def read_json(path: str, default=None):
  """A JSON file's value; `default` if it is missing, empty or does not parse (a damaged
  side file is treated as absent by whoever can rebuild it)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def digest(*paths: str) -> str:
  """sha256 over every file under `paths` (folders walked in sorted order), names included,
  so that a flipped byte, a truncated or a missing file all change it."""
  sha = hashlib.sha256()
  for root_path in paths:
    files = [root_path] if os.path.isfile(root_path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(root_path) for name in names)
    for path in files:
      sha.update(os.path.relpath(path, os.path.dirname(root_path)).encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          sha.update(block)
      sha.update(b"\0")
  return sha.hexdigest()


def size_bytes(path: str) -> int:
  """Bytes under a folder (or of a file); 0 if it is not there."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)
