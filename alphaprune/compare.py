"""Every method × seeds at equal budget: `python -m alphaprune.compare`.

  python -m alphaprune.compare --config=configs/fashion_mnist.py:compare --seeds=0-2 \
      --workdir=runs/compare [--methods=alpha_blend,scratch,...] [--parallel=N] \
      [--config.KEY=VALUE ...]

Per seed, `alpha_blend` runs first and pretrains the teacher; every other
method loads that teacher by path (ROOT/seed_<k>/alpha_blend/teacher), so
differences come from the methods alone. Runs go through `alphaprune.jobs`:
finished ones are skipped, unfinished ones resume. Writes ROOT/compare.json,
ROOT/compare.md and ROOT/compare.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from alphaprune.jobs import Job, default_launcher, mean_std, parse_seeds, read_summary, run_jobs
from alphaprune.methods import METHODS


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
      summary = read_summary(os.path.join(root, f"seed_{seed}", method))
      if summary is not None:
        out.setdefault(method, {})[seed] = summary
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


def job(root: str, config: str, seed: int, method: str, overrides) -> Job:
  """One (seed, method) run; all but alpha_blend load the teacher alpha_blend pretrained."""
  seed_root = os.path.join(root, f"seed_{seed}")
  args = [f"--config={config}", f"--config.seed={seed}", f"--config.method={method}"]
  if method != "alpha_blend":
    args.append(f"--config.teacher.checkpoint={os.path.join(seed_root, 'alpha_blend', 'teacher')}")
  return Job(f"seed {seed} {method}", os.path.join(seed_root, method),
             (*args, *overrides), os.path.join(seed_root, f"{method}.log"))


def _parse(argv):
  parser = argparse.ArgumentParser(description="every method × seeds at equal budget")
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", default="0-2", help="e.g. 0-2, 1,3 or 0-2,5")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--parallel", type=int, default=1, help="runs at once")
  parser.add_argument("--launcher", default=None,
                      help="command that runs one job (default: this Python, -m alphaprune.main)")
  args, overrides = parser.parse_known_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  bad = [m for m in methods if m not in METHODS] + [o for o in overrides
                                                    if not o.startswith("--config.")]
  if bad or "alpha_blend" not in methods:
    raise ValueError(f"{bad or 'alpha_blend is needed (it pretrains the shared teacher)'}; "
                     f"methods are {', '.join(METHODS)} and overrides --config.KEY=VALUE")
  return args, overrides, methods, parse_seeds(args.seeds)


def main(argv=None) -> int:
  try:
    args, overrides, methods, seeds = _parse(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  launcher = shlex.split(args.launcher) if args.launcher else default_launcher()
  teachers = {s: job(args.workdir, args.config, s, "alpha_blend", overrides) for s in seeds}
  codes = run_jobs(list(teachers.values()), launcher, args.parallel)
  others = [job(args.workdir, args.config, s, m, overrides) for s in seeds
            if codes[teachers[s].name] == 0 for m in methods if m != "alpha_blend"]
  codes.update(run_jobs(others, launcher, args.parallel))
  stats = write(args.workdir, methods, seeds)
  if stats:
    print(table(stats))
  failed = [name for name, code in codes.items() if code]
  if failed:
    print(f"error: {', '.join(failed)} failed (a failed alpha_blend leaves its seed without a "
          f"teacher); see the logs in {args.workdir}/seed_<k>/", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
