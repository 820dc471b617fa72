#!/usr/bin/env python3
"""Seed sweep: one workdir per seed, then mean ± std of every summary metric.

  python launch/sweep.py --config=configs/fashion_mnist.py:quick --seeds=0-4 \
      --workdir=runs/sweep [--parallel=2] [--config.KEY=VALUE ...]

Writes ROOT/seed_<k>/ (a normal run each), ROOT/sweep.json and ROOT/sweep.md.
Resumable: a seed whose summary.json exists is skipped, an unfinished one
resumes from its checkpoints. Exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys


def parse_seeds(text: str) -> list[int]:
  """'0-4' → [0, 1, 2, 3, 4]; '1,3,7' → [1, 3, 7]; '0-2,5' → [0, 1, 2, 5]."""
  seeds: list[int] = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds += range(int(lo), int(hi) + 1)
    else:
      seeds.append(int(part))
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds={text!r}: give distinct non-negative seeds, e.g. 0-4 or 1,3,7")
  return seeds


def aggregate(summaries: dict[int, dict]) -> dict:
  """{metric: {mean, std, values}} over seeds for every numeric summary key (std: n − 1)."""
  from alphaprune.compare import mean_std
  out = {}
  keys = sorted(set.intersection(*(set(s) for s in summaries.values())))
  for key in keys:
    values = [summaries[seed][key] for seed in sorted(summaries)]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      out[key] = mean_std(values)
  return out


def run_seed(seed, args, overrides, launcher) -> tuple[int, int]:
  workdir = os.path.join(args.workdir, f"seed_{seed}")
  if os.path.exists(os.path.join(workdir, "summary.json")):
    print(f"seed {seed}: finished already, skipped", flush=True)
    return seed, 0
  os.makedirs(args.workdir, exist_ok=True)
  cmd = launcher + [f"--config={args.config}", f"--workdir={workdir}", f"--config.seed={seed}",
                    *overrides]
  with open(os.path.join(args.workdir, f"seed_{seed}.log"), "a") as log:
    code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
  print(f"seed {seed}: exit {code}", flush=True)
  return seed, code


def write_results(root: str, seeds: list[int]) -> dict:
  summaries = {}
  for seed in seeds:
    path = os.path.join(root, f"seed_{seed}", "summary.json")
    if os.path.exists(path):
      with open(path) as f:
        summaries[seed] = json.load(f)
  if not summaries:
    return {}
  stats = aggregate(summaries)
  result = {"seeds": sorted(summaries), "metrics": stats}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(result, f, indent=2)
  lines = [f"# Sweep over seeds {', '.join(map(str, sorted(summaries)))}", "",
           "| metric | mean | std | per seed |", "| --- | --- | --- | --- |"]
  for key, s in stats.items():
    lines.append(f"| {key} | {s['mean']:.6g} | {s['std']:.3g} | "
                 f"{', '.join(f'{v:.6g}' for v in s['values'])} |")
  with open(os.path.join(root, "sweep.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", required=True)
  parser.add_argument("--workdir", required=True, help="the sweep's root folder")
  parser.add_argument("--parallel", type=int, default=1, help="seeds run at once")
  parser.add_argument("--launcher", default=None,
                      help="command that runs one job (default: this Python, -m alphaprune.main)")
  args, overrides = parser.parse_known_args(argv)
  bad = [o for o in overrides if not o.startswith("--config.")]
  if bad:
    print(f"error: unknown arguments {bad}; pass config overrides as --config.KEY=VALUE",
          file=sys.stderr)
    return 2
  try:
    seeds = parse_seeds(args.seeds)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  launcher = shlex.split(args.launcher) if args.launcher else [sys.executable, "-m",
                                                                "alphaprune.main"]
  with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
    codes = dict(pool.map(lambda s: run_seed(s, args, overrides, launcher), seeds))
  result = write_results(args.workdir, seeds)
  failed = [s for s, c in codes.items() if c]
  for key in ("teacher_test_accuracy", "pruned_test_accuracy"):
    if key in result.get("metrics", {}):
      m = result["metrics"][key]
      print(f"{key}: {m['mean']:.4f} ± {m['std']:.4f} over {len(m['values'])} seeds")
  if failed:
    print(f"error: seeds {failed} failed; see {args.workdir}/seed_<k>.log", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
