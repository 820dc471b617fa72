#!/usr/bin/env python3
"""Seed sweep: one workdir per seed, then mean ± std of every summary metric.

  python launch/sweep.py --config=configs/fashion_mnist.py:quick --seeds=0-4 \
      --workdir=runs/sweep [--parallel=2] [--config.KEY=VALUE ...]

Writes ROOT/seed_<k>/ (a normal run each, log in ROOT/seed_<k>.log),
ROOT/sweep.json and ROOT/sweep.md. Runs go through `alphaprune.jobs`: a seed
whose summary.json exists is skipped, an unfinished one resumes from its
checkpoints. Exits 1 if any seed failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from alphaprune import config as config_lib, files
from alphaprune.jobs import (Job, default_launcher, mean_std, parse_seeds, read_summary,
                             run_jobs)


def aggregate(summaries: dict[int, dict]) -> dict:
  """{metric: {mean, std, values}} over seeds for every numeric summary key (std: n − 1)."""
  out = {}
  keys = sorted(set.intersection(*(set(s) for s in summaries.values())))
  for key in keys:
    values = [summaries[seed][key] for seed in sorted(summaries)]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      out[key] = mean_std(values)
  return out


def write_results(root: str, seeds: list[int]) -> dict:
  summaries = {s: read_summary(os.path.join(root, f"seed_{s}")) for s in seeds}
  summaries = {s: v for s, v in summaries.items() if v is not None}
  if not summaries:
    return {}
  stats = aggregate(summaries)
  result = {"seeds": sorted(summaries), "metrics": stats}
  files.write_json(os.path.join(root, "sweep.json"), result)
  lines = [f"# Sweep over seeds {', '.join(map(str, sorted(summaries)))}", "",
           "| metric | mean | std | per seed |", "| --- | --- | --- | --- |"]
  for key, s in stats.items():
    lines.append(f"| {key} | {s['mean']:.6g} | {s['std']:.3g} | "
                 f"{', '.join(f'{v:.6g}' for v in s['values'])} |")
  files.write_atomic(os.path.join(root, "sweep.md"), "\n".join(lines) + "\n")
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", required=True, help="e.g. 0-4, 1,3 or 0-2,5")
  parser.add_argument("--workdir", required=True, help="the sweep's root folder")
  parser.add_argument("--parallel", type=int, default=1, help="seeds run at once")
  parser.add_argument("--launcher", default=None,
                      help="command that runs one job (default: this Python, -m alphaprune.main)")
  args, overrides = parser.parse_known_args(argv)
  bad = [o for o in overrides if not o.startswith("--config.")]
  try:
    if bad:
      raise ValueError(f"unknown arguments {bad}; pass config overrides as --config.KEY=VALUE")
    seeds = parse_seeds(args.seeds)
    config_lib.validate(config_lib.load(args.config, [*overrides, f"--config.seed={seeds[0]}"]))
  except ValueError as e:  # ConfigError too: a bad override fails before any run starts
    print(f"error: {e}", file=sys.stderr)
    return 2
  launcher = shlex.split(args.launcher) if args.launcher else default_launcher()
  jobs = [Job(f"seed {s}", os.path.join(args.workdir, f"seed_{s}"),
              (f"--config={args.config}", f"--config.seed={s}", *overrides),
              os.path.join(args.workdir, f"seed_{s}.log")) for s in seeds]
  codes = run_jobs(jobs, launcher, args.parallel)
  result = write_results(args.workdir, seeds)
  for key in ("teacher_test_accuracy", "pruned_test_accuracy"):
    if key in result.get("metrics", {}):
      m = result["metrics"][key]
      print(f"{key}: {m['mean']:.4f} ± {m['std']:.4f} over {len(m['values'])} seeds")
  failed = [name for name, code in codes.items() if code]
  if failed:
    print(f"error: {', '.join(failed)} failed; see {args.workdir}/seed_<k>.log", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
