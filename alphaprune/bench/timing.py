"""The timing core: programs measured in turn, their medians, and the spread of a ratio.

Each ratio compares two figures taken in one process with the same model, batch and
optimizer, measured interleaved with the order rotating every round, and summarised by
the median of the rounds; the spread of a ratio is the quartiles of its round-by-round
values.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax


def _timeit(fn, *args):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def interleaved_samples(fns: dict, repeats: int) -> dict:
  """Seconds of each zero-argument callable, measured in turn `repeats` times: one list
  per name, entry r from round r.

  The order rotates every round (A B C, B C A, C A B, …): on a 2-core machine a program
  runs 2–4% slower right after a different one than after itself (measured with three
  copies of one program), so a fixed order would charge that to whichever comes second."""
  for fn in fns.values():  # compile and warm up
    fn()
  names = list(fns)
  times = {name: [] for name in fns}
  for round_index in range(repeats):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      times[name].append(_timeit(fns[name]))
  return times


def medians(samples: dict) -> dict:
  return {name: statistics.median(times) for name, times in samples.items()}


def interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each callable (see `interleaved_samples`)."""
  return medians(interleaved_samples(fns, repeats))


def quartiles(samples: dict, num: str, den: str) -> list[float]:
  """The spread of a ratio: first and third quartiles of num ÷ den round by round (the two
  measured back to back, so slow drifts of the machine cancel)."""
  q = statistics.quantiles([a / b for a, b in zip(samples[num], samples[den])], n=4)
  return [q[0], q[2]]


def fresh(workdir: str, name: str) -> str:
  """A new run folder under the scratch `workdir`: a bench run reusing `--workdir` must not
  resume (and report) the runs of an earlier one."""
  os.makedirs(workdir, exist_ok=True)
  return tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
