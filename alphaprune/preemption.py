"""Preemption and Ctrl-C: the run saves and stops at the next point it can save.

Inside `saves_and_stops()` a SIGTERM (what TPU and SLURM preemption send) or a first Ctrl-C
(SIGINT) only sets a flag; the driver asks `requested(step)` at every step boundary it can
save at (streamed) or at the end of every epoch (on the device, where an epoch is one
compiled loop), saves, and raises `Preempted`, which the command line turns into the line
that says how to resume and exit code 0 (SIGTERM) or 130 (Ctrl-C). A second Ctrl-C stops at
once (KeyboardInterrupt: exit 130, the last checkpoint left as it was). Several processes
stop at the same step on SIGTERM through JAX's preemption sync point.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import jax


class Preempted(Exception):
  """A stop was asked for; the run saved a checkpoint and stops."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


_ASKED: dict = {"by": None}  # "SIGTERM" | "Ctrl-C" | None
_LOCK = threading.Lock()


def _on_sigterm(*_):
  _ASKED["by"] = _ASKED["by"] or "SIGTERM"


def _on_sigint(*_):
  with _LOCK:
    if _ASKED["by"] == "Ctrl-C":
      raise KeyboardInterrupt
    _ASKED["by"] = "Ctrl-C"
  print("Ctrl-C: saving at the next point the run can save (press it again to stop at once)",
        file=sys.stderr, flush=True)


@contextlib.contextmanager
def saves_and_stops():
  """Inside the block, SIGTERM and Ctrl-C ask the run to save and stop; the process's own
  handlers come back after it."""
  _ASKED["by"] = None
  if threading.current_thread() is not threading.main_thread():  # signals reach main only
    yield
    return
  previous = {sig: signal.signal(sig, handler) for sig, handler in
              ((signal.SIGTERM, _on_sigterm), (signal.SIGINT, _on_sigint))}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def requested(step: int) -> bool:
  """Whether to save and stop after `step`: on every process at the same step (several
  processes agree through JAX's preemption sync point)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.reached_preemption_sync_point(step)
  return _ASKED["by"] is not None


def stop(where: str) -> Preempted:
  """The exception that ends a run which saved `where` (e.g. "prune at step 7 ...")."""
  by = _ASKED["by"] or "SIGTERM"  # several processes: JAX's sync point saw a SIGTERM
  return Preempted(f"stopped by {by}: saved {where}; run the same command to resume",
                   130 if by == "Ctrl-C" else 0)
