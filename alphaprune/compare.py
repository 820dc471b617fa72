"""Methods × keep ratios × a grid of settings × seeds at equal budget: `alphaprune.compare`.

  python -m alphaprune.compare --config=configs/fashion_mnist.py:compare --seeds=0-4 \
      --keep-ratios=0.35,0.1,0.05,0.02 --workdir=runs/curve [--results=results/curve] \
      [--methods=alpha_blend,soft,one_shot_random,...] [--grid=KEY=V1,V2,... ...] \
      [--parallel=N] [--config.KEY=VALUE ...]
  python -m alphaprune.compare --redraw=results/curve

A *cell* is one keep ratio with one combination of the grid's values (each `--grid` is an
axis, several give their product, and `--grid=K1+K2=a+b,c+d` varies two keys together);
every (cell, seed, method) is one run of the ordinary driver in ROOT/<cell>/seed_<k>/<method>,
its log beside it. Per seed, the `alpha_blend` run of the first cell pretrains the teacher and
every other run loads it by path, so differences come from the methods and settings alone; a
grid axis that changes pretraining (model.*, data.*, teacher.epochs/optimizer/learning_rate,
train.momentum, train.plateau.*) gets a teacher per value. `--config.teacher.checkpoint=PATH`
gives every run that teacher instead. `NAME_random` is method NAME with random masks
(`prune.criterion=random`), the control Blalock et al. (2020) ask for. Every run's config is
loaded and checked before the first starts; finished runs are skipped, unfinished ones resume.

Every method of a seed shares its teacher, masks' allocation and batch order, so methods are
compared by paired per-seed differences from `alpha_blend` (mean and 95% t-interval), and a
grid's settings are ranked by validation accuracy, never by test accuracy. ROOT (and
`--results`, which also gets the command in COMMAND) receives compare.json (every seed's value
of every metric, the statistics, and every run's curves per epoch), compare.md (the tables),
compare.png (test accuracy against the fraction of weights kept), paired.png (the paired
differences with their intervals), losses.png (each cell's α-run losses per epoch),
stages.png (each method's accuracy, generalisation gap and student gradient per epoch, mean
over seeds) and, with a grid, epochs.png. `--redraw=DIR` re-draws DIR's tables and figures from its compare.json alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from typing import NamedTuple

from alphaprune import config as config_lib, files
from alphaprune.jobs import Job, default_launcher, mean_std, parse_seeds, read_summary, run_jobs
from alphaprune.methods import METHODS, PRUNING, RANDOM_MASKS as RANDOM

CONTROLS = ("alpha_blend_random", "one_shot_random", "scratch_random")
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


def split_method(entry: str) -> tuple[str, list[tuple[str, str]]]:
  """An entry of --methods: METHOD, METHOD_random, or either followed by @KEY=VALUE settings
  of its own (`alpha_blend@prune.init=copy`): (the method, [(key, value), ...])."""
  name, *settings = entry.split("@")
  pairs = [tuple(setting.split("=", 1)) for setting in settings]
  if name.endswith(RANDOM):
    name, pairs = name[:-len(RANDOM)], [("prune.criterion", "random"), *pairs]
  return name, pairs


def run_args(method: str) -> list[str]:
  """The config overrides of one entry of --methods."""
  name, settings = split_method(method)
  return [f"--config.method={name}", *(f"--config.{key}={value}" for key, value in settings)]


def valid_method(entry: str) -> bool:
  name, settings = split_method(entry)
  random = entry.split("@")[0].endswith(RANDOM)
  return (name in METHODS and not (random and name in PRUNING)
          and all(len(pair) == 2 and pair[0] for pair in settings))


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

# Per seed: the summary's values, and these derived from it.
METRICS = ("pruned_test_accuracy", "pruned_val_accuracy", "teacher_test_accuracy",
           "teacher_val_accuracy", "gap_to_teacher", "pruned_test_nll", "pruned_test_ece",
           "teacher_test_nll", "teacher_test_ece", "kept_fraction", "kept_prunable_params",
           "params_total_after", "params_total_before", "epochs_total", "wall_seconds",
           "pretrain_seconds", "final_train_loss", "final_val_loss", "best_val_loss",
           "val_over_train_loss", "val_loss_above_best")
PAIRED = ("pruned_test_accuracy", "pruned_val_accuracy", "pruned_test_nll", "pruned_test_ece")
REFERENCE = "alpha_blend"  # what the paired differences are taken from
# What compare.json keeps of every epoch of every run (the norms where train.log_student_norms).
CURVE_KEYS = ("alpha", "lr", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
              "student_grad_norm", "student_update_norm")


def pruning_history(workdir: str) -> list[dict]:
  """The pruning phase's records of a run's metrics.jsonl (empty if there is none)."""
  from alphaprune import report
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return []
  return [h for h in report.read_history(workdir) if h["phase"] in ("prune", "finetune")]


def seed_values(summary: dict, history: list[dict]) -> dict:
  """One run's value of every metric (METRICS; None where its run did not record it)."""
  values = {key: summary.get(key) for key in METRICS}
  values["warnings"] = summary.get("warnings", [])  # chance accuracy, divergence
  values["gap_to_teacher"] = summary["pruned_test_accuracy"] - summary["teacher_test_accuracy"]
  values["kept_fraction"] = summary["kept_prunable_params"] / summary["prunable_params"]
  if history:
    final_train, final_val = history[-1]["train_loss"], history[-1]["val_loss"]
    best_val = min(h["val_loss"] for h in history)
    values.update(final_train_loss=final_train, final_val_loss=final_val, best_val_loss=best_val,
                  val_over_train_loss=final_val / final_train,
                  val_loss_above_best=final_val / best_val - 1)
  return values


def collect(root: str, cells, methods, seeds) -> tuple[dict, dict]:
  """({(cell, method): {seed: every metric}}, {cell name: {method: [each seed's pruning
  history]}} of the staged methods) of the finished runs under `root`."""
  values, curves = {}, {}
  for cell in cells:
    for method in methods:
      for seed in seeds:
        workdir = run_dir(root, cell, seed, method)
        summary = read_summary(workdir)
        if summary is None:
          continue
        history = pruning_history(workdir)
        values.setdefault((cell, method), {})[seed] = seed_values(summary, history)
        if history:
          curves.setdefault(cell.name, {}).setdefault(method, []).append(
              [{key: h[key] for key in CURVE_KEYS if key in h} for h in history])
  return values, curves


def pair_entries(entries: list[dict], first: str, second: str, key: str) -> dict:
  """{cell: paired difference first − second in `key`} over the seeds both have."""
  by_cell: dict = {}
  for entry in entries:
    by_cell.setdefault(entry["cell"], {})[entry["method"]] = entry
  out = {}
  for cell, methods in by_cell.items():
    if first in methods and second in methods:
      a, b = methods[first]["per_seed"], methods[second]["per_seed"]
      seeds = [seed for seed in a if seed in b]
      if seeds:
        out[cell] = paired([a[seed][key] - b[seed][key] for seed in seeds])
  return out


def paired(diffs: list[float]) -> dict:
  """Mean of paired per-seed differences and its 95% t-interval (None with one seed)."""
  import scipy.stats

  count = len(diffs)
  mean = sum(diffs) / count
  if count < 2:
    return {"mean": mean, "low": None, "high": None, "n": count, "excludes_zero": False}
  half = scipy.stats.t.ppf(0.975, count - 1) * mean_std(diffs)["std"] / count ** 0.5
  return {"mean": mean, "low": mean - half, "high": mean + half, "n": count,
          "excludes_zero": bool(mean - half > 0 or mean + half < 0)}


def entries(values: dict) -> list[dict]:
  """One entry per (cell, method), in the order of the cells and methods: every seed's
  values, mean ± std of each metric, and the paired differences from `alpha_blend`."""
  out = []
  for (cell, method), by_seed in values.items():
    seeds = sorted(by_seed)
    entry = {"cell": cell.name, "keep_ratio": cell.keep, "settings": dict(cell.settings),
             "method": method, "seeds": seeds,
             "per_seed": {str(seed): by_seed[seed] for seed in seeds},
             "stats": {key: mean_std([by_seed[seed][key] for seed in seeds])
                       for key in METRICS if all(by_seed[seed][key] is not None for seed in seeds)},
             "paired": {}}
    reference = values.get((cell, REFERENCE), {})
    common = [seed for seed in seeds if seed in reference]
    if method != REFERENCE and common:
      entry["paired"] = {key: paired([by_seed[seed][key] - reference[seed][key]
                                      for seed in common])
                         for key in PAIRED if all(by_seed[seed][key] is not None and
                                                  reference[seed][key] is not None
                                                  for seed in common)}
    out.append(entry)
  return out


def write(root: str, cells, methods, seeds, results: str | None = None,
          command: str | None = None) -> dict | None:
  """compare.json, compare.md and the figures of the finished runs under `root` (and in
  `results`, with `command` in COMMAND); None if no run has finished."""
  from alphaprune import report
  values, curves = collect(root, cells, methods, seeds)
  if not values:
    return None
  grid = {"command": command, "code": code_version(), "seeds": list(seeds),
          "methods": list(methods), "entries": entries(values), "curves": curves}
  for folder in filter(None, (root, results)):
    os.makedirs(folder, exist_ok=True)
    files.write_json(os.path.join(folder, "compare.json"), grid, indent=1)
    report.write_grid(grid, folder)
    if command and folder == results:
      files.write_atomic(os.path.join(folder, "COMMAND"), command + "\n")
  return grid


def code_version() -> str | None:
  """The commit of the code that made a grid (None outside a git checkout)."""
  import subprocess
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def redraw(folder: str) -> dict:
  """A kept grid's tables and figures, re-drawn from its compare.json alone."""
  from alphaprune import report
  path = os.path.join(folder, "compare.json")
  if not os.path.exists(path):
    raise ValueError(f"--redraw={folder}: no compare.json there; give a folder compare wrote")
  with open(path) as f:
    grid = json.load(f)
  report.write_grid(grid, folder)
  return grid


# ------------------------------------------------------------------ command line

def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description="methods × keep ratios × grid × seeds")
  parser.add_argument("--config")
  parser.add_argument("--seeds", default="0-2", help="e.g. 0-2, 1,3 or 0-2,5")
  parser.add_argument("--workdir", help="where the runs go (large: checkpoints, exports)")
  parser.add_argument("--results", default=None,
                      help="also write the tables, figures, compare.json and COMMAND here "
                           "(small enough to commit: results/NAME)")
  parser.add_argument("--redraw", default=None,
                      help="re-draw the tables and figures of a kept grid from its compare.json")
  parser.add_argument("--pair", default=None,
                      help="with --redraw: print the paired differences A − B of two of the "
                           "grid's methods per cell (--pair=A,B)")
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
  return parser


def _parse(argv):
  args, overrides = _parser().parse_known_args(argv)
  if not args.config or not args.workdir:
    raise ValueError("--config and --workdir are required (or --redraw=DIR alone)")
  methods = [m for m in args.methods.split(",") if m]
  bad = [m for m in methods if not valid_method(m)] + [
      o for o in overrides if not o.startswith("--config.")]
  if bad:
    raise ValueError(f"{', '.join(bad)}: methods are {', '.join(METHODS)} (NAME_random for "
                     "random masks, not gmp or imp; NAME@KEY=VALUE for a setting of its own) "
                     "and overrides --config.KEY=VALUE")
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
  config = config_lib.load(args.config, overrides)
  check_keys(config, [k for k, _ in grid[0]])
  text = args.keep_ratios or (keep_override[-1] if keep_override else
                              str(config.prune.keep_ratio))
  cells = [Cell(k, settings) for k in parse_keep_ratios(text) for settings in grid]
  return args, overrides, methods, seeds, cells


def check_runs(config: str, cells, seeds, methods, overrides) -> None:
  """Loads and validates every run's config before any starts: a bad override, grid value
  or a setting a method would ignore fails here, naming the run (one-line ValueError)."""
  for cell in cells:
    for method in methods:
      run = job("", config, cell, seeds[0], method, overrides, None)
      try:
        config_lib.validate(config_lib.load(config, list(run.args[1:])))
      except config_lib.ConfigError as e:
        raise ValueError(f"{cell.name} {method}: {e}") from None


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    known = _parser().parse_known_args(argv)[0]
    if known.redraw:
      grid = redraw(known.redraw)
      if known.pair:
        from alphaprune import report
        first, second = known.pair.rsplit(",", 1)
        print(report.pair_table(grid["entries"], first, second))
      else:
        print(f"redrew {len(grid['entries'])} entries")
      return 0
    args, overrides, methods, seeds, cells = _parse(argv)
    check_runs(args.config, cells, seeds, methods, overrides)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  launcher = shlex.split(args.launcher) if args.launcher else default_launcher()
  teachers, others = plan(args.workdir, args.config, cells, seeds, methods, overrides)
  codes = run_jobs(teachers, launcher, args.parallel)
  ready = [j for provider, j in others if provider is None or codes[provider.name] == 0]
  codes.update(run_jobs(ready, launcher, args.parallel))
  command = shlex.join(["python", "-m", "alphaprune.compare", *argv])
  grid = write(args.workdir, cells, methods, seeds, args.results, command)
  if grid:
    from alphaprune import report
    print(report.accuracy_table(grid["entries"]))
  failed = [name for name, code in codes.items() if code]
  if failed:
    print(f"error: {len(failed)} run(s) failed, first {failed[0]} (a failed teacher run leaves "
          f"its seed without the others); see the .log beside each run in {args.workdir}",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
