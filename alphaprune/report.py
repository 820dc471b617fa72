"""Plots and a markdown summary of a run: `python -m alphaprune.report --workdir=DIR`.

Figures (in DIR/report/): accuracy.png and loss.png (train and validation per
epoch over the whole run, coloured by α, stage boundaries marked),
alpha_accuracy.png (each stage's final validation accuracy against α) and
lr.png (the learning rate, showing each stage reset and plateau cut).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from alphaprune.jobs import mean_std
from alphaprune.methods import METHODS, RANDOM_MASKS as RANDOM


def read_history(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def curves(history: list[dict]) -> dict:
  """The data every figure draws, one entry per epoch in run order."""
  x = np.arange(1, len(history) + 1)
  col = lambda key: np.array([h[key] for h in history], float)
  boundaries = [i + 1.5 for i, h in enumerate(history[:-1])
                if (h["phase"], h["stage"]) != (history[i + 1]["phase"], history[i + 1]["stage"])]
  return {"x": x, "phase": [h["phase"] for h in history], "alpha": col("alpha"),
          "train_accuracy": col("train_accuracy"), "val_accuracy": col("val_accuracy"),
          "train_loss": col("train_loss"), "val_loss": col("val_loss"), "lr": col("lr"),
          "boundaries": boundaries}


def stage_ends(history: list[dict]) -> dict:
  """(α, final validation accuracy) of each pruning stage, in order."""
  last = {}
  for h in history:
    if h["phase"] in ("prune", "finetune"):
      last[(h["phase"], h["stage"])] = h
  ends = list(last.values())
  return {"alpha": np.array([h["alpha"] for h in ends]),
          "val_accuracy": np.array([h["val_accuracy"] for h in ends]),
          "phase": [h["phase"] for h in ends]}


def _alpha_colours(alpha, phase):
  import matplotlib.pyplot as plt
  cmap = plt.get_cmap("viridis")
  return [(0.55, 0.55, 0.55, 1.0) if p == "pretrain" else cmap(a) for a, p in zip(alpha, phase)]


def _curve_figure(c, key, ylabel, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 4.5))
  colours = _alpha_colours(c["alpha"], c["phase"])
  ax.scatter(c["x"], c[f"train_{key}"], c=colours, marker="o", s=18, label="train")
  ax.scatter(c["x"], c[f"val_{key}"], c=colours, marker="x", s=24, label="validation")
  ax.plot(c["x"], c[f"train_{key}"], color="0.8", lw=0.8, zorder=0)
  ax.plot(c["x"], c[f"val_{key}"], color="0.6", lw=0.8, ls="--", zorder=0)
  for b in c["boundaries"]:
    ax.axvline(b, color="0.85", lw=0.6, zorder=-1)
  sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
  fig.colorbar(sm, ax=ax, label="α (grey: teacher pretraining)")
  ax.set_xlabel("epoch (whole run; vertical lines: stage boundaries)")
  ax.set_ylabel(ylabel)
  ax.legend(loc="best")
  ax.set_title(f"{ylabel}: o train, x validation")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(workdir: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  history = read_history(workdir)
  out = os.path.join(workdir, "report")
  os.makedirs(out, exist_ok=True)
  c = curves(history)
  paths = [os.path.join(out, n) for n in
           ("accuracy.png", "loss.png", "alpha_accuracy.png", "lr.png")]
  _curve_figure(c, "accuracy", "accuracy", paths[0])
  _curve_figure(c, "loss", "loss", paths[1])

  summary = {}
  if os.path.exists(os.path.join(workdir, "summary.json")):
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  ends = stage_ends(history)
  fig, ax = plt.subplots(figsize=(6, 4.5))
  stage = np.array([p == "prune" for p in ends["phase"]], bool)
  ax.plot(ends["alpha"][stage], ends["val_accuracy"][stage], "o-",
          label="end of α-stage (validation)")
  if (~stage).any():
    ax.plot(ends["alpha"][~stage], ends["val_accuracy"][~stage], "s", color="C2",
            label="after fine-tuning at α = 0")
  if "teacher_val_accuracy" in summary:
    ax.plot([1.0], [summary["teacher_val_accuracy"]], "*", ms=14, color="C3",
            label="teacher (α = 1)")
  ax.set_xlim(1.05, -0.05)
  ax.set_xlabel("α (1 = teacher, 0 = pruned network alone)")
  ax.set_ylabel("validation accuracy")
  ax.legend(loc="best")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(paths[2], dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(9, 3.5))
  ax.step(c["x"], c["lr"], where="mid", color="C0")
  ax.scatter(c["x"], c["lr"], c=_alpha_colours(c["alpha"], c["phase"]), s=14, zorder=3)
  for b in c["boundaries"]:
    ax.axvline(b, color="0.85", lw=0.6, zorder=-1)
  ax.set_yscale("log")
  ax.set_xlabel("epoch (whole run; vertical lines: stage boundaries)")
  ax.set_ylabel("learning rate")
  ax.set_title("learning rate: reset at each stage, cut on validation-loss plateaus")
  fig.tight_layout()
  fig.savefig(paths[3], dpi=110)
  plt.close(fig)

  rows = [f"| {k} | {v if not isinstance(v, float) else f'{v:.4f}'} |"
          for k, v in summary.items() if k != "alphas"]
  alphas = ", ".join(f"{a:.3f}" for a in summary.get("alphas", []))
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("# alphaprune run summary\n\n| key | value |\n| --- | --- |\n" + "\n".join(rows))
    f.write(f"\n\nα-schedule ({len(summary.get('alphas', []))} stages): {alphas}\n\n")
    f.write("".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n\n" for p in paths))
  return paths + [os.path.join(out, "summary.md")]


# ------------------------------------------------------------------ a grid (compare)

def _row_key(s: dict) -> tuple:
  return (s["method"], tuple(s["settings"].items()))


def _label(s: dict) -> str:
  settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items())
  return f"{s['method']} ({settings})" if settings else s["method"]


def _fmt(stat, spec: str) -> str:
  return "–" if stat is None else format(stat["mean"], spec)


def grid_table(stats: list[dict]) -> str:
  """Test accuracy (mean ± std) and gap to the teacher per method × keep ratio, then every
  cell's details."""
  keeps = sorted({s["keep_ratio"] for s in stats}, reverse=True)
  rows = {}
  for s in stats:
    rows.setdefault(_row_key(s), {})[s["keep_ratio"]] = s
  lines = ["| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
           "| --- |" + " --- |" * len(keeps)]
  for cells in rows.values():
    first = next(iter(cells.values()))
    entries = []
    for k in keeps:
      s = cells.get(k)
      entries.append("" if s is None else (
          f"{s['pruned_test_accuracy']['mean']:.4f} ± {s['pruned_test_accuracy']['std']:.4f} "
          f"({s['gap_to_teacher']['mean']:+.4f})"))
    lines.append(f"| {_label(first)} | " + " | ".join(entries) + " |")
  lines += ["", "| keep | method | pruned test accuracy | gap to teacher | teacher | "
            "kept / total params | epochs after pretraining | val ÷ train loss at the end | "
            "val loss above its best | wall time (s) | seeds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for s in stats:
    acc, gap, t = s["pruned_test_accuracy"], s["gap_to_teacher"], s["teacher_test_accuracy"]
    lines.append(
        f"| {s['keep_ratio']:g} | {_label(s)} | {acc['mean']:.4f} ± {acc['std']:.4f} | "
        f"{gap['mean']:+.4f} ± {gap['std']:.4f} | {t['mean']:.4f} ± {t['std']:.4f} | "
        f"{s['params_total_after']['mean']:.0f} / {s['params_total_before']['mean']:.0f} | "
        f"{s['epochs_total']['mean']:.0f} | {_fmt(s['val_over_train_loss'], '.2f')} | "
        f"{_fmt(s['val_loss_above_best'], '+.0%')} | {s['wall_seconds']['mean']:.0f} | "
        f"{len(s['seeds'])} |")
  return "\n".join(lines)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_curve(stats: list[dict], path: str) -> None:
  """Test accuracy against the fraction of weights kept: one line per method (and grid
  setting), error bars over seeds, the teachers as a band."""
  plt = _pyplot()
  rows = {}
  for s in stats:
    rows.setdefault(_row_key(s), []).append(s)
  fig, ax = plt.subplots(figsize=(8, 5))
  teachers = [v for s in stats for v in s["teacher_test_accuracy"]["values"]]
  t = mean_std(teachers)
  ax.axhspan(t["mean"] - t["std"], t["mean"] + t["std"], color="0.5", alpha=0.2, lw=0)
  ax.axhline(t["mean"], color="k", ls="--", lw=1,
             label=f"dense teacher {t['mean']:.4f} ± {t['std']:.4f}")
  by_method = not any(s["settings"] for s in stats)  # a colour per method, random dotted
  for i, row in enumerate(rows.values()):
    row = sorted(row, key=lambda s: s["keep_ratio"])
    method = row[0]["method"]
    random = method.endswith(RANDOM)
    colour = METHODS.index(method[:-len(RANDOM)] if random else method) if by_method else i
    ax.errorbar([s["kept_fraction"]["mean"] for s in row],
                [s["pruned_test_accuracy"]["mean"] for s in row],
                yerr=[s["pruned_test_accuracy"]["std"] for s in row], capsize=3,
                marker="o", ms=4, ls=":" if random else "-", color=f"C{colour % 10}",
                lw=2.2 if row[0]["method"] == "alpha_blend" else 1.2, label=_label(row[0]))
  ax.set_xscale("log")
  keeps = sorted({s["keep_ratio"] for s in stats})
  ax.set_xticks(keeps, [f"{k:g}" for k in keeps])
  ax.minorticks_off()
  ax.set_xlabel("fraction of prunable weights kept (log)")
  n = max(len(s["seeds"]) for s in stats)
  ax.set_ylabel(f"pruned test accuracy (mean ± std, {n} seeds)")
  ax.set_title("same teacher, masks' keep ratio and epoch budget for every method")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_losses(histories: dict, path: str, method: str = "alpha_blend") -> bool:
  """Train and validation loss per epoch of `method` in each cell (every seed a line):
  `histories` is {cell name: [each seed's pruning-phase metrics]}."""
  panels = list(histories.items())[:16]
  if not panels:
    return False
  plt = _pyplot()
  cols = min(4, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  for ax, (cell, runs) in zip(axes.flat, panels):
    for i, history in enumerate(runs):
      x = range(1, len(history) + 1)
      ax.plot(x, [h["train_loss"] for h in history], color="C0", lw=1,
              label="train" if i == 0 else None)
      ax.plot(x, [h["val_loss"] for h in history], color="C1", lw=1, ls="--",
              label="validation" if i == 0 else None)
      if i == 0:
        for j in range(1, len(history)):
          if history[j]["alpha"] != history[j - 1]["alpha"]:
            ax.axvline(j + 0.5, color="0.8", lw=0.6)
    ax.set_title(cell.replace(",", "\n", 1) if "," in cell else cell, fontsize=8)
    ax.set_xlabel("epoch after pretraining (grey: α-stage ends)", fontsize=7)
    ax.tick_params(labelsize=7)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.suptitle(f"{method}: loss per epoch, every seed", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_epochs(stats: list[dict], path: str) -> None:
  """Pruned test accuracy against the epochs each (cell, method) trained after pretraining."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5))
  for i, s in enumerate(stats):
    ax.errorbar(s["epochs_total"]["mean"], s["pruned_test_accuracy"]["mean"],
                xerr=s["epochs_total"]["std"], yerr=s["pruned_test_accuracy"]["std"],
                marker="o", capsize=3, color=f"C{i % 10}",
                label=f"keep {s['keep_ratio']:g}, {_label(s)}")
  ax.set_xscale("log")
  ax.set_xlabel("epochs after pretraining (mean over seeds, log)")
  ax.set_ylabel("pruned test accuracy (mean ± std)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args(argv)
  if not os.path.exists(os.path.join(args.workdir, "metrics.jsonl")):
    print(f"error: {args.workdir} has no metrics.jsonl; give the workdir of a run",
          file=sys.stderr)
    sys.exit(2)
  for p in write_report(args.workdir):
    print(p)


if __name__ == "__main__":
  main()
