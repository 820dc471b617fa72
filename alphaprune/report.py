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
