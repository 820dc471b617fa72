"""Methods × keep ratios × a grid of settings × seeds at equal budget: `alphaprune.compare`.

  python -m alphaprune.compare --config=configs/fashion_mnist.py:compare --seeds=0-2 \
      --keep-ratios=0.35,0.2,0.1,0.05,0.02 --workdir=runs/curve \
      [--methods=alpha_blend,soft,one_shot_random,...] [--grid=KEY=V1,V2,... ...] \
      [--parallel=N] [--config.KEY=VALUE ...]

A *cell* is one keep ratio with one combination of the grid's values (each
`--grid` is an axis, several give their product, and `--grid=K1+K2=a+b,c+d`
varies two keys together); every (cell, seed, method) is one run of the
ordinary driver in ROOT/<cell>/seed_<k>/<method>, its log beside it. Per
seed, the `alpha_blend` run of the first cell pretrains the teacher and every
other run loads it by path, so differences come from the methods and settings
alone; a grid axis that changes pretraining (model.*, data.*,
teacher.epochs/optimizer/learning_rate, train.momentum, train.plateau.*) gets
a teacher per value. `--config.teacher.checkpoint=PATH` gives every run that
teacher instead.
`NAME_random` is method NAME with random masks (`prune.criterion=random`), the
control Blalock et al. (2020) ask for. Runs go through `alphaprune.jobs`:
finished ones are skipped, unfinished ones resume.

Writes ROOT/compare.json, ROOT/compare.md (accuracy, std and gap to the
teacher per method × keep ratio; per cell also the final validation ÷ training
loss and how far the validation loss ended above its best), ROOT/compare.png (test accuracy against the
fraction of weights kept, log axis, the teacher as a band), ROOT/losses.png
(train and validation loss per epoch of each cell's α-run) and, with a grid,
ROOT/epochs.png (accuracy against the epochs each cell trained).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from typing import NamedTuple

from alphaprune import config as config_lib
from alphaprune.jobs import Job, default_launcher, mean_std, parse_seeds, read_summary, run_jobs
from alphaprune.methods import METHODS, RANDOM_MASKS as RANDOM

CONTROLS = ("alpha_blend_random", "one_shot_random")
DEFAULT_METHODS = METHODS + CONTROLS
# Grid keys that change the teacher's pretraining: one teacher per value.
TEACHER_KEYS = ("model.", "data.", "teacher.epochs", "teacher.optimizer", "teacher.learning_rate",
                "train.momentum", "train.plateau.")
# Keys the command line sets itself.
RESERVED = ("method", "seed", "prune.keep_ratio", "teacher.checkpoint")


class Cell(NamedTuple):
  """One keep ratio with one setting of every grid axis."""

  keep: float
  settings: tuple[tuple[str, str], ...]  # ((key, value), ...) in axis order

  @property
  def name(self) -> str:  # its folder under the root
    parts = [f"keep_{self.keep:g}"] + [f"{k}={v}" for k, v in self.settings]
    return ",".join(parts).replace(os.sep, "_")

  def teacher_key(self) -> tuple:
    return tuple((k, v) for k, v in self.settings if k.startswith(TEACHER_KEYS))


def run_args(method: str) -> list[str]:
  """The config overrides of one entry of --methods."""
  if method.endswith(RANDOM):
    return [f"--config.method={method[:-len(RANDOM)]}", "--config.prune.criterion=random"]
  return [f"--config.method={method}"]


def valid_method(name: str) -> bool:
  base = name[:-len(RANDOM)] if name.endswith(RANDOM) else name
  return base in METHODS and not (name.endswith(RANDOM) and base == "gmp")


def parse_keep_ratios(text: str) -> list[float]:
  try:
    ratios = [float(r) for r in text.split(",") if r]
  except ValueError:
    ratios = []
  if not ratios or any(not 0 < r <= 1 for r in ratios) or len(set(ratios)) != len(ratios):
    raise ValueError(f"--keep-ratios={text!r}: give distinct fractions in (0, 1], "
                     "e.g. 0.35,0.1,0.02")
  return ratios


def parse_grid(axes) -> list[tuple[tuple[str, str], ...]]:
  """Each axis is KEY=V1,V2,... (or KEY1+KEY2=A1+B1,A2+B2,... to vary keys together); the
  grid is the product of the axes: ['a=1,2', 'b+c=x+y'] → [(a=1, b=x, c=y), (a=2, b=x, c=y)]."""
  parsed, seen = [], []
  for axis in axes:
    keys, eq, values = axis.partition("=")
    keys = keys.split("+")
    values = [v.split("+") for v in values.split(",") if v]
    if (not eq or not all(keys) or not values or len(set(map(tuple, values))) != len(values)
        or any(len(v) != len(keys) for v in values)):
      raise ValueError(f"--grid={axis!r}: give KEY=V1,V2,... with distinct values (or "
                       "KEY1+KEY2=A1+B1,A2+B2), e.g. --grid=loss.reduction=mean,sum")
    bad = [k for k in keys if k in RESERVED or k in seen]
    if bad:
      raise ValueError(f"--grid={axis!r}: {bad[0]} is set by compare itself or by an earlier "
                       "--grid (methods: --methods, keep ratios: --keep-ratios, seeds: --seeds)")
    seen += keys
    parsed.append([tuple(zip(keys, v)) for v in values])
  return [sum(cell, ()) for cell in itertools.product(*parsed)]


def check_keys(config, keys) -> None:
  """Every grid key must name a key of the config (one-line ValueError otherwise)."""
  for key in keys:
    node = config
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node:
        raise ValueError(f"--grid: no config key {key!r}; the keys and their defaults are in "
                         "alphaprune/config.py")
      node = node[part]


# ------------------------------------------------------------------ jobs

def run_dir(root: str, cell: Cell, seed: int, method: str) -> str:
  return os.path.join(root, cell.name, f"seed_{seed}", method)


def job(root: str, config: str, cell: Cell, seed: int, method: str, overrides,
        teacher: str | None) -> Job:
  """One run; `teacher` is the pretrained teacher it loads (None: it pretrains its own)."""
  workdir = run_dir(root, cell, seed, method)
  args = [f"--config={config}", f"--config.seed={seed}", *run_args(method),
          f"--config.prune.keep_ratio={cell.keep}",
          *(f"--config.{k}={v}" for k, v in cell.settings)]
  if teacher:
    args.append(f"--config.teacher.checkpoint={teacher}")
  name = f"{cell.name} seed {seed} {method}"
  return Job(name, workdir, (*args, *overrides), workdir + ".log")


def plan(root: str, config: str, cells, seeds, methods, overrides) -> tuple[list, list]:
  """(teacher jobs, [(its teacher job or None, job), ...]): per seed and teacher setting, the
  first cell's alpha_blend pretrains the teacher the others load; with a given teacher
  (--config.teacher.checkpoint) there are no teacher jobs."""
  if any(o.startswith("--config.teacher.checkpoint=") for o in overrides):
    return [], [(None, job(root, config, c, s, m, overrides, None))
                for s in seeds for c in cells for m in methods]
  firsts = {}
  for c in cells:
    firsts.setdefault(c.teacher_key(), c)
  teachers, others = {}, []
  for s in seeds:
    for key, c in firsts.items():
      teachers[(s, key)] = job(root, config, c, s, "alpha_blend", overrides, None)
    for c in cells:
      provider = teachers[(s, c.teacher_key())]
      for m in methods:
        if (c, m) != (firsts[c.teacher_key()], "alpha_blend"):
          others.append((provider, job(root, config, c, s, m, overrides,
                                       os.path.join(provider.workdir, "teacher"))))
  return list(teachers.values()), others


# ------------------------------------------------------------------ results

def loss_ends(workdir: str) -> dict:
  """The pruning phase's last training and validation loss and its lowest validation loss
  (from metrics.jsonl; empty if there is none)."""
  from alphaprune import report
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return {}
  history = [h for h in report.read_history(workdir) if h["phase"] in ("prune", "finetune")]
  if not history:
    return {}
  return {"final_train_loss": history[-1]["train_loss"],
          "final_val_loss": history[-1]["val_loss"],
          "best_val_loss": min(h["val_loss"] for h in history)}


def collect(root: str, cells, methods, seeds) -> dict:
  """{(cell, method): {seed: summary, with the losses' ends}} of the finished runs."""
  out = {}
  for c in cells:
    for m in methods:
      for s in seeds:
        workdir = run_dir(root, c, s, m)
        summary = read_summary(workdir)
        if summary is not None:
          out.setdefault((c, m), {})[s] = {**summary, **loss_ends(workdir)}
  return out


def aggregate(by_seed: dict) -> dict:
  """Mean ± std over seeds of one (cell, method)'s summaries."""
  runs = [by_seed[s] for s in sorted(by_seed)]
  stat = lambda key: mean_std(r[key] for r in runs)
  has_losses = all("final_val_loss" in r for r in runs)
  return {
      "seeds": sorted(by_seed),
      "pruned_test_accuracy": stat("pruned_test_accuracy"),
      "teacher_test_accuracy": stat("teacher_test_accuracy"),
      "gap_to_teacher": mean_std(r["pruned_test_accuracy"] - r["teacher_test_accuracy"]
                                 for r in runs),
      "kept_fraction": mean_std(r["kept_prunable_params"] / r["prunable_params"] for r in runs),
      "kept_prunable_params": stat("kept_prunable_params"),
      "params_total_after": stat("params_total_after"),
      "params_total_before": stat("params_total_before"),
      "epochs_total": stat("epochs_total"),
      "wall_seconds": stat("wall_seconds"),
      # Overfitting: the last validation loss over the last training loss, and how far the
      # validation loss ended above its best (None where a run has no metrics.jsonl).
      "val_over_train_loss": mean_std(r["final_val_loss"] / r["final_train_loss"]
                                      for r in runs) if has_losses else None,
      "val_loss_above_best": mean_std(r["final_val_loss"] / r["best_val_loss"] - 1
                                      for r in runs) if has_losses else None,
  }


def statistics(summaries: dict) -> list[dict]:
  """One entry per (cell, method) with results, in the order of the cells and methods."""
  return [{"keep_ratio": c.keep, "settings": dict(c.settings), "cell": c.name, "method": m,
           **aggregate(by_seed)} for (c, m), by_seed in summaries.items()]


def histories(root: str, summaries: dict, method: str) -> dict:
  """{cell name: [the pruning phase's metrics of each seed's `method` run]} (for the loss
  figure)."""
  from alphaprune import report
  out = {}
  for (cell, name), by_seed in summaries.items():
    if name != method:
      continue
    for seed in sorted(by_seed):
      workdir = run_dir(root, cell, seed, method)
      if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        out.setdefault(cell.name, []).append(
            [h for h in report.read_history(workdir) if h["phase"] in ("prune", "finetune")])
  return out


def write(root: str, cells, methods, seeds) -> list[dict]:
  """compare.json, compare.md and the figures from the finished runs under `root`."""
  from alphaprune import report
  summaries = collect(root, cells, methods, seeds)
  if not summaries:
    return []
  stats = statistics(summaries)
  with open(os.path.join(root, "compare.json"), "w") as f:
    json.dump(stats, f, indent=2)
  with open(os.path.join(root, "compare.md"), "w") as f:
    f.write(f"# Test accuracy (mean ± std over seeds {', '.join(map(str, seeds))}; in brackets "
            f"the gap to the teacher)\n\n{report.grid_table(stats)}\n")
  report.plot_curve(stats, os.path.join(root, "compare.png"))
  staged = [m for m in ("alpha_blend", "soft") if m in methods]
  if staged:
    report.plot_losses(histories(root, summaries, staged[0]), os.path.join(root, "losses.png"),
                       staged[0])
  if any(c.settings for c in cells):
    report.plot_epochs(stats, os.path.join(root, "epochs.png"))
  return stats


# ------------------------------------------------------------------ command line

def _parse(argv):
  parser = argparse.ArgumentParser(description="methods × keep ratios × grid × seeds")
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", default="0-2", help="e.g. 0-2, 1,3 or 0-2,5")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"of {', '.join(METHODS)}; NAME_random: NAME with random masks")
  parser.add_argument("--keep-ratios", default=None,
                      help="e.g. 0.35,0.2,0.1,0.05,0.02 (default: the config's)")
  parser.add_argument("--grid", action="append", default=[],
                      help="KEY=V1,V2,...: an axis of config settings (repeat for a product; "
                           "K1+K2=A1+B1,A2+B2 varies keys together)")
  parser.add_argument("--parallel", type=int, default=1, help="runs at once")
  parser.add_argument("--launcher", default=None,
                      help="command that runs one job (default: this Python, -m alphaprune.main)")
  args, overrides = parser.parse_known_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  bad = [m for m in methods if not valid_method(m)] + [
      o for o in overrides if not o.startswith("--config.")]
  if bad:
    raise ValueError(f"{', '.join(bad)}: methods are {', '.join(METHODS)} (NAME_random for "
                     "random masks, not gmp) and overrides --config.KEY=VALUE")
  given_teacher = any(o.startswith("--config.teacher.checkpoint=") for o in overrides)
  if "alpha_blend" not in methods and not given_teacher:
    raise ValueError("--methods needs alpha_blend (it pretrains the shared teacher), or give "
                     "one with --config.teacher.checkpoint=PATH")
  seeds = parse_seeds(args.seeds)
  grid = parse_grid(args.grid)
  keep_override = [o.split("=", 1)[1] for o in overrides
                   if o.startswith("--config.prune.keep_ratio=")]
  if keep_override and args.keep_ratios:
    raise ValueError("give keep ratios once: --keep-ratios or --config.prune.keep_ratio")
  config = config_lib.load(args.config)
  check_keys(config, [k for k, _ in grid[0]])
  text = args.keep_ratios or (keep_override[-1] if keep_override else
                              str(config.prune.keep_ratio))
  cells = [Cell(k, settings) for k in parse_keep_ratios(text) for settings in grid]
  return args, overrides, methods, seeds, cells


def main(argv=None) -> int:
  try:
    args, overrides, methods, seeds, cells = _parse(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  launcher = shlex.split(args.launcher) if args.launcher else default_launcher()
  teachers, others = plan(args.workdir, args.config, cells, seeds, methods, overrides)
  codes = run_jobs(teachers, launcher, args.parallel)
  ready = [j for provider, j in others if provider is None or codes[provider.name] == 0]
  codes.update(run_jobs(ready, launcher, args.parallel))
  stats = write(args.workdir, cells, methods, seeds)
  if stats:
    from alphaprune import report
    print(report.grid_table(stats))
  failed = [name for name, code in codes.items() if code]
  if failed:
    print(f"error: {len(failed)} run(s) failed, first {failed[0]} (a failed teacher run leaves "
          f"its seed without the others); see the .log beside each run in {args.workdir}",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
