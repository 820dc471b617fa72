"""Every method × seeds at equal budget: `python -m alphaprune.compare`.

  python -m alphaprune.compare --config=configs/fashion_mnist.py:compare --seeds=0-2 \
      --workdir=runs/compare [--methods=alpha_blend,scratch,...] [--config.KEY=VALUE ...]

Per seed, `alpha_blend` runs first and pretrains the teacher; every other
method loads that teacher by path (ROOT/seed_<k>/alpha_blend/teacher), so
differences come from the methods alone. Finished runs are skipped. Writes
ROOT/compare.json, ROOT/compare.md and ROOT/compare.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys

METHODS = ("alpha_blend", "scratch", "one_shot", "gmp", "distill")


def mean_std(values) -> dict:
  """Mean and sample standard deviation (n − 1; 0 for a single value)."""
  values = list(values)
  mean = sum(values) / len(values)
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
  return {"mean": mean, "std": math.sqrt(var), "values": values}


def aggregate(summaries: dict) -> dict:
  """{method: {metric: mean_std}} from {method: {seed: summary}}."""
  out = {}
  for method, by_seed in summaries.items():
    runs = [by_seed[s] for s in sorted(by_seed)]
    out[method] = {
        "seeds": sorted(by_seed),
        "pruned_test_accuracy": mean_std(r["pruned_test_accuracy"] for r in runs),
        "teacher_test_accuracy": mean_std(r["teacher_test_accuracy"] for r in runs),
        "gap_to_teacher": mean_std(r["pruned_test_accuracy"] - r["teacher_test_accuracy"]
                                   for r in runs),
        "kept_prunable_params": mean_std(r["kept_prunable_params"] for r in runs),
        "params_total_after": mean_std(r["params_total_after"] for r in runs),
        "params_total_before": mean_std(r["params_total_before"] for r in runs),
        "epochs_total": mean_std(r["epochs_total"] for r in runs),
        "wall_seconds": mean_std(r["wall_seconds"] for r in runs),
    }
  return out


def table(stats: dict) -> str:
  lines = ["| method | pruned test accuracy | gap to teacher | kept / total params | "
           "epochs after pretraining | wall time (s) |", "| --- | --- | --- | --- | --- | --- |"]
  for method, s in stats.items():
    acc, gap = s["pruned_test_accuracy"], s["gap_to_teacher"]
    lines.append(
        f"| {method} | {acc['mean']:.4f} ± {acc['std']:.4f} | {gap['mean']:+.4f} ± "
        f"{gap['std']:.4f} | {s['params_total_after']['mean']:.0f} / "
        f"{s['params_total_before']['mean']:.0f} | {s['epochs_total']['mean']:.0f} | "
        f"{s['wall_seconds']['mean']:.0f} ± {s['wall_seconds']['std']:.0f} |")
  return "\n".join(lines)


def plot(stats: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  methods = list(stats)
  acc = [stats[m]["pruned_test_accuracy"] for m in methods]
  teacher = stats[methods[0]]["teacher_test_accuracy"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.bar(methods, [a["mean"] for a in acc], yerr=[a["std"] for a in acc], capsize=6,
         color=["C0" if m == "alpha_blend" else "C7" for m in methods])
  ax.axhline(teacher["mean"], color="C3", ls="--",
             label=f"dense teacher {teacher['mean']:.4f}")
  low = min(a["mean"] - a["std"] for a in acc + [teacher])
  high = max(a["mean"] + a["std"] for a in acc + [teacher])
  ax.set_ylim(low - 0.3 * (high - low + 1e-3), high + 0.3 * (high - low + 1e-3))
  n = len(stats[methods[0]]["seeds"])
  ax.set_ylabel(f"pruned test accuracy (mean ± std, {n} seeds; axis cut)")
  ax.set_title("same teacher, masks' keep ratio and epoch budget for every method")
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def collect(root: str, methods, seeds) -> dict:
  out = {}
  for method in methods:
    for seed in seeds:
      path = os.path.join(root, f"seed_{seed}", method, "summary.json")
      if os.path.exists(path):
        with open(path) as f:
          out.setdefault(method, {})[seed] = json.load(f)
  return out


def write(root: str, methods, seeds) -> dict:
  summaries = collect(root, methods, seeds)
  if not summaries:
    return {}
  stats = aggregate(summaries)
  with open(os.path.join(root, "compare.json"), "w") as f:
    json.dump(stats, f, indent=2)
  with open(os.path.join(root, "compare.md"), "w") as f:
    f.write(f"# Methods at equal budget, seeds {', '.join(map(str, seeds))}\n\n{table(stats)}\n")
  plot(stats, os.path.join(root, "compare.png"))
  return stats


def _job(launcher, config, workdir, seed, extra, overrides, log_path) -> int:
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return 0
  cmd = launcher + [f"--config={config}", f"--workdir={workdir}", f"--config.seed={seed}",
                    *extra, *overrides]
  with open(log_path, "a") as log:
    return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="every method × seeds at equal budget")
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", default="0-2")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--launcher", default=None,
                      help="command that runs one job (default: this Python, -m alphaprune.main)")
  args, overrides = parser.parse_known_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  bad = [m for m in methods if m not in METHODS] + [o for o in overrides
                                                    if not o.startswith("--config.")]
  if bad or "alpha_blend" not in methods:
    print(f"error: {bad or 'alpha_blend is needed (it pretrains the shared teacher)'}; methods "
          f"are {', '.join(METHODS)} and overrides --config.KEY=VALUE", file=sys.stderr)
    return 2
  lo, _, hi = args.seeds.partition("-")
  seeds = list(range(int(lo), int(hi or lo) + 1))
  launcher = shlex.split(args.launcher) if args.launcher else [sys.executable, "-m",
                                                                "alphaprune.main"]
  failed = []
  for seed in seeds:
    seed_root = os.path.join(args.workdir, f"seed_{seed}")
    os.makedirs(seed_root, exist_ok=True)
    teacher = os.path.join(seed_root, "alpha_blend", "teacher")
    for method in ["alpha_blend"] + [m for m in methods if m != "alpha_blend"]:
      extra = [f"--config.method={method}"]
      if method != "alpha_blend":
        extra.append(f"--config.teacher.checkpoint={teacher}")
      code = _job(launcher, args.config, os.path.join(seed_root, method), seed, extra, overrides,
                  os.path.join(seed_root, f"{method}.log"))
      print(f"seed {seed} {method}: exit {code}", flush=True)
      if code:
        failed.append((seed, method))
        if method == "alpha_blend":
          break  # no teacher for the others
  stats = write(args.workdir, methods, seeds)
  if stats:
    print(table(stats))
  if failed:
    print(f"error: {failed} failed; see the logs in {args.workdir}/seed_<k>/", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
