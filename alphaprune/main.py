"""Command line: `python -m alphaprune.main --config=configs/NAME.py[:VARIANT] --workdir=DIR
[--config.KEY=VALUE ...]`.

Only parses flags and calls `train.run(config, workdir)`. Exit codes: 0 done, or stopped by
SIGTERM after saving (the same command resumes); 2 bad config or input (one line on stderr,
nothing written); 130 stopped by Ctrl-C; 1 anything else (one line: a full disk, a damaged
save, a diverged run, a non-finite loss).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading

from absl import app, flags, logging

_CONFIG = flags.DEFINE_string("config", None, "Config file (configs/NAME.py[:VARIANT]); "
                              "--config.KEY=VALUE overrides one of its keys.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs, export and report go.")


# How the command line exits once it has said why: at once (os._exit), so that no background
# thread (orbax's, TensorStore's, Grain's) prints a traceback while the interpreter shuts
# down. Tests that run `main` in their own process replace it with sys.exit.
EXIT = os._exit


# A background thread that dies while the run fails (orbax's save threads when the disk fills:
# "RuntimeError: Event loop is closed") would print its traceback around the one line that
# says why. Such tracebacks are held: dropped when the run has said why it stops, printed
# at the end otherwise (then they are news: a bug to report).
_HELD: list = []


def _hold_background_errors():
  threading.excepthook = _HELD.append
  sys.unraisablehook = _HELD.append


def _print_held():
  for held in _HELD:
    if isinstance(held, threading.ExceptHookArgs):
      threading.__excepthook__(held)
    else:
      sys.__unraisablehook__(held)
  _HELD.clear()


def _exit(code: int):
  if code == 0:
    _print_held()
  sys.stdout.flush()
  sys.stderr.flush()
  EXIT(code)


def _fail(message: str, code: int = 2, prefix: str = "error"):
  """One line on stderr, then the exit."""
  print(f"{prefix}: {message}", file=sys.stderr, flush=True)
  _exit(code)


def parse_flags(argv):
  """Flag errors are bad input: exit 2. Returns [program, --config.KEY=VALUE overrides...]:
  the overrides are the config loader's to parse (`config.load`)."""
  overrides = [arg for arg in argv[1:] if arg.startswith("--config.")]
  rest = [arg for arg in argv if not arg.startswith("--config.")]
  try:
    unparsed = flags.FLAGS(rest)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _fail(" ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0])
  if len(unparsed) > 1:
    _fail(f"unexpected arguments {unparsed[1:]}; use --config.KEY=VALUE")
  return [argv[0], *overrides]


def _disk_full(error: BaseException) -> bool:
  """Whether `error` (or what caused it) is a full disk, as Python or TensorStore says it."""
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error) or "RESOURCE_EXHAUSTED" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _room(workdir: str) -> tuple[int, int]:
  """(bytes free where the workdir is, bytes of its largest checkpoint)."""
  from alphaprune import files
  checkpoints = os.path.join(workdir, "checkpoints")
  largest = max((files.size_bytes(os.path.join(root, name)) for root, dirs, _ in
                 os.walk(checkpoints) for name in dirs if name.isdigit()), default=0)
  free = shutil.disk_usage(workdir if os.path.exists(workdir) else ".").free
  return free, largest


def _out_of_room(workdir: str) -> bool:
  """Whether the workdir's disk cannot take another checkpoint: what a failed save means
  when its error lost the ENOSPC on the way (orbax's threads then raise "Event loop is
  closed" in the main thread)."""
  free, largest = _room(workdir)
  return free < max(largest, 2**20)


def _disk_full_line(workdir: str) -> str:
  free, largest = _room(workdir)
  return (f"the disk is full while writing in {workdir} ({free / 2**20:.0f} MiB free; a "
          f"checkpoint takes about {max(largest, 1) / 2**20:.1f} MiB, and the run keeps a few); "
          "free some space and run the same command to resume from the last checkpoint")


def main(argv):
  # Orbax, TensorStore and TFDS log through absl, at length (a failed save: a traceback from
  # each of its threads); what a user needs, the run says itself in one line.
  logging.set_verbosity(logging.FATAL)
  _hold_background_errors()
  if _WORKDIR.value is None:
    _fail("--workdir is required (where the run's files go)")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py:quick")
  from alphaprune import checkpoint, config as config_lib, devices, train
  from alphaprune.data import DataError
  try:
    config = config_lib.load(_CONFIG.value, argv[1:])
  except config_lib.ConfigError as e:
    _fail(str(e))
  devices.maybe_initialize_distributed()
  workdir = _WORKDIR.value
  try:
    summary = train.run(config, workdir)
  except (config_lib.ConfigError, DataError) as e:
    _fail(str(e))
  except train.Preempted as e:
    print(e, flush=True)
    _exit(e.exit_code)
  except KeyboardInterrupt:
    _fail("stopped by a second Ctrl-C before saving; run the same command to resume from the "
          "last checkpoint", 130)
  except (train.NonFiniteLoss, checkpoint.Corrupt) as e:
    _fail(str(e), 1)
  except Exception as e:  # a full disk is the operator's to fix; anything else is a bug
    if not (_disk_full(e) or _out_of_room(workdir)):
      raise
    _fail(_disk_full_line(workdir), 1)
  if summary.get("diverged"):
    _exit(1)
  _print_held()


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
