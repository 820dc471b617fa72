"""The run's files besides checkpoints: its lock, config.json, metrics.jsonl, TensorBoard
and summary.json. In a multi-process run process 0 alone writes them.

A workdir has one writer. The lock is an OS lock (`flock`) on the workdir folder itself,
so deleting a file inside it cannot defeat it; `workdir/.lock` names the holder's pid and
host for the message a second run gets. The OS drops the lock when its process dies, however
it dies, so a killed run never blocks its own resume. Side files are written atomically
(`files.write_atomic`): a kill or a full disk leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from typing import Any, NamedTuple

import ml_collections

from alphaprune import devices, files
from alphaprune.config import SAFE_TO_CHANGE, ConfigError, changed_keys

LOCK = ".lock"
TB_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "alpha")


# ------------------------------------------------------------------ one writer

def _owner(workdir: str) -> str:
  try:
    with open(os.path.join(workdir, LOCK)) as f:
      return f.read().strip() or "another process"
  except OSError:
    return "another process"


def _busy(workdir: str) -> ConfigError:
  return ConfigError(f"workdir {workdir} is in use by {_owner(workdir)}; wait for that run to "
                     "finish (or stop it), or use another --workdir")


def check_writable(workdir: str) -> None:
  """The workdir must be a folder this process can write (or be creatable): a file there, a
  read-only or missing parent is bad input, found before anything is written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file; give a folder (new or a run's)")
  target = os.path.abspath(workdir)
  while not os.path.exists(target):
    target = os.path.dirname(target)
  try:
    probe = tempfile.NamedTemporaryFile(dir=target, prefix=".alphaprune-probe-")
    probe.close()
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} cannot be written ({target}: {e.strerror}); "
                      "give a folder you can write") from None


def check_free(workdir: str) -> None:
  """Raises ConfigError if another live process holds the workdir; writes nothing."""
  if not devices.is_primary() or not os.path.isdir(workdir):
    return
  fd = os.open(workdir, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    raise _busy(workdir) from None
  finally:
    os.close(fd)


@contextlib.contextmanager
def lock(workdir: str):
  """Holds the workdir for this run (process 0 of a multi-process run holds it for all): an
  OS lock on the folder, and `.lock` naming the holder."""
  if not devices.is_primary():
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(workdir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _busy(workdir) from None
    files.write_atomic(os.path.join(workdir, LOCK),
                       f"process {os.getpid()} on {socket.gethostname()}\n")
    yield
  finally:
    os.close(fd)  # releases the lock


# ------------------------------------------------------------------ config

def has_state(workdir: str) -> bool:
  """Whether the workdir holds anything a run would resume from (a teacher, a checkpoint)."""
  checkpoints = os.path.join(workdir, "checkpoints")
  return (os.path.exists(os.path.join(workdir, "teacher", "model.json"))
          or any(name.isdigit() for root, dirs, _ in os.walk(checkpoints) for name in dirs))


def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir holding a run of a different config (a key not safe to change). A
  workdir with nothing to resume from takes any config: a run that failed before its first
  checkpoint leaves nothing that refuses the corrected command."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not has_state(workdir):
    return
  saved = files.read_json(path)
  if saved is None:
    from alphaprune import checkpoint
    saved = checkpoint.saved_config(workdir)
    if saved is None:
      raise ConfigError(f"{path} is damaged and no checkpoint holds the run's config; restore "
                        "it, or use a new --workdir")
  current = json.loads(config.to_json_best_effort())
  unsafe = [k for k in changed_keys(saved, current) if k not in SAFE_TO_CHANGE]
  if unsafe:
    raise ConfigError(f"{workdir} holds a run with a different config ({', '.join(unsafe)}); "
                      "use a new --workdir or the saved config")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if devices.is_primary():
    files.write_atomic(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))


# ------------------------------------------------------------------ metrics

class Log(NamedTuple):
  """Where epoch records go: metrics.jsonl, and TensorBoard when tensorboardX is there."""

  path: str | None  # None on processes other than 0
  tensorboard: Any = None


def open_log(workdir: str) -> Log:
  if not devices.is_primary():
    return Log(None)
  try:
    from tensorboardX import SummaryWriter
    tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
  except ImportError:  # TensorBoard logs are optional
    tb = None
  return Log(os.path.join(workdir, "metrics.jsonl"), tb)


def rewrite(log: Log, history: list[dict]) -> None:
  """metrics.jsonl made to hold exactly `history` (a resumed run's, or a fresh phase's)."""
  if log.path:
    files.write_atomic(log.path, "".join(json.dumps(record) + "\n" for record in history))


def append(log: Log, record: dict, index: int) -> None:
  if not log.path:
    return
  with open(log.path, "a") as f:
    f.write(json.dumps(record) + "\n")
  if log.tensorboard is not None:
    for key in TB_KEYS:
      log.tensorboard.add_scalar(f"{record['phase']}/{key}", record[key], index)
    log.tensorboard.flush()


def close(log: Log) -> None:
  if log.tensorboard is not None:
    log.tensorboard.close()


def write_summary(workdir: str, summary: dict) -> None:
  if devices.is_primary():
    files.write_json(os.path.join(workdir, "summary.json"), summary)
