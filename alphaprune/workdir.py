"""The run's files besides checkpoints: its lock, config.json, metrics.jsonl, TensorBoard
and summary.json. In a multi-process run process 0 alone writes them.

A workdir has one writer. The lock is an OS lock (`flock`) on `workdir/.lock`,
which holds the owner's pid and host: the OS drops it when its process dies,
however it dies, so a killed run never blocks its own resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, NamedTuple

import ml_collections

from alphaprune import devices
from alphaprune.config import SAFE_TO_CHANGE, ConfigError, changed_keys

LOCK = ".lock"
TB_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "alpha")


# ------------------------------------------------------------------ one writer

def _owner(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or "another process"
  except OSError:
    return "another process"


def _busy(workdir: str, path: str) -> ConfigError:
  return ConfigError(f"workdir {workdir} is in use by {_owner(path)}; wait for that run to "
                     "finish (or stop it), or use another --workdir")


def check_free(workdir: str) -> None:
  """Raises ConfigError if another live process holds the workdir; writes nothing."""
  path = os.path.join(workdir, LOCK)
  if not devices.is_primary() or not os.path.exists(path):
    return
  with open(path) as f:
    try:
      fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _busy(workdir, path) from None


@contextlib.contextmanager
def lock(workdir: str):
  """Holds the workdir for this run (process 0 of a multi-process run holds it for all)."""
  if not devices.is_primary():
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _busy(workdir, path) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
    yield
  finally:
    os.close(fd)  # releases the lock


# ------------------------------------------------------------------ config

def check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir whose saved config differs from `config` in an unsafe key."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  unsafe = [k for k in changed_keys(saved, current) if k not in SAFE_TO_CHANGE]
  if unsafe:
    raise ConfigError(f"{workdir} holds a run with a different config ({', '.join(unsafe)}); "
                      "use a new --workdir or the saved config")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if devices.is_primary():
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


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
    with open(log.path, "w") as f:
      f.writelines(json.dumps(record) + "\n" for record in history)


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
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
