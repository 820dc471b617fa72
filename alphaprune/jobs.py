"""One runner for many runs: one workdir per job, finished ones skipped, unfinished resumed.

`compare` (methods × keep ratios × seeds) and `launch/sweep.py` (seeds) both
describe their runs as `Job`s and hand them to `run_jobs`; each job is the
ordinary command line (`python -m alphaprune.main`) in its own workdir, with
its output in a log beside it. A job whose workdir holds a `summary.json` that parses is done
and skipped; any other resumes from its own checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import subprocess
import sys
from typing import NamedTuple, Sequence

from alphaprune import files


class Job(NamedTuple):
  name: str  # for progress lines, e.g. "seed 1 gmp"
  workdir: str
  args: tuple[str, ...]  # --config=..., --config.KEY=VALUE, ... (no --workdir)
  log: str  # the job's stdout and stderr


def parse_seeds(text: str) -> list[int]:
  """'0-4' → [0, 1, 2, 3, 4]; '1,3,7' → [1, 3, 7]; '0-2,5' → [0, 1, 2, 5]."""
  seeds: list[int] = []
  try:
    for part in text.split(","):
      lo, dash, hi = part.partition("-")
      seeds += range(int(lo), int(hi) + 1) if dash else [int(part)]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds={text!r}: give distinct non-negative seeds, e.g. 0-4, 1,3,7 "
                     "or 0-2,5")
  return seeds


def default_launcher() -> list[str]:
  return [sys.executable, "-m", "alphaprune.main"]


def finished(workdir: str) -> bool:
  """A run is finished when its summary.json parses (a half-written one: not finished, so it
  runs again, and resumes from its checkpoints)."""
  return read_summary(workdir) is not None


def run_job(job: Job, launcher: Sequence[str]) -> int:
  """The job's exit code (0 at once if it finished before)."""
  if finished(job.workdir):
    print(f"{job.name}: finished already, skipped", flush=True)
    return 0
  os.makedirs(os.path.dirname(os.path.abspath(job.log)), exist_ok=True)
  with open(job.log, "a") as log:
    code = subprocess.call([*launcher, *job.args, f"--workdir={job.workdir}"], stdout=log,
                           stderr=subprocess.STDOUT)
  print(f"{job.name}: exit {code}", flush=True)
  return code


def run_jobs(jobs: Sequence[Job], launcher: Sequence[str], parallel: int = 1) -> dict[str, int]:
  """{job name: exit code}, `parallel` jobs at a time."""
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    codes = pool.map(lambda job: run_job(job, launcher), jobs)
    return dict(zip((job.name for job in jobs), codes))


def read_summary(workdir: str) -> dict | None:
  """A run's summary, or None if it has none or it does not parse."""
  summary = files.read_json(os.path.join(workdir, "summary.json"))
  return summary if isinstance(summary, dict) else None


def mean_std(values) -> dict:
  """Mean and sample standard deviation (n − 1; 0 for a single value)."""
  values = list(values)
  mean = sum(values) / len(values)
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
  return {"mean": mean, "std": math.sqrt(var), "values": values}
