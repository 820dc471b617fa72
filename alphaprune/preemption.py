"""Preemption: SIGTERM (what TPU and SLURM preemption send) saves the run and stops it.

Inside `saves_and_stops()` a SIGTERM only sets a flag; the driver asks `requested(step)`
at every step boundary it can save at (streamed) or at the end of every epoch (on the
device, where an epoch is one compiled loop), saves, and raises `Preempted`, which the
command line turns into exit code 0 and the line that says how to resume. Several
processes stop at the same step through JAX's preemption sync point.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax


class Preempted(Exception):
  """SIGTERM arrived; the run saved a checkpoint and stops (exit code 0)."""


_SIGTERM = threading.Event()


@contextlib.contextmanager
def saves_and_stops():
  """Inside the block, SIGTERM asks the run to save and stop; the process's own handler
  comes back after it."""
  _SIGTERM.clear()
  if threading.current_thread() is not threading.main_thread():  # signals reach main only
    yield
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: _SIGTERM.set())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def requested(step: int) -> bool:
  """Whether to save and stop after `step`: on every process at the same step (several
  processes agree through JAX's preemption sync point)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.reached_preemption_sync_point(step)
  return _SIGTERM.is_set()
