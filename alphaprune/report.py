"""Plots and a markdown summary of a run: `python -m alphaprune.report --workdir=DIR`; one
figure of a kept grid: `python -m alphaprune.report --grid=results/NAME --select=KEY=VALUE
--out=FILE.png`; and compare's tables and figures (`write_grid`).

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

from alphaprune import files
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

  summary = files.read_json(os.path.join(workdir, "summary.json"), {})
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
  files.write_atomic(os.path.join(out, "summary.md"), (
      "# alphaprune run summary\n\n| key | value |\n| --- | --- |\n" + "\n".join(rows)
      + f"\n\nα-schedule ({len(summary.get('alphas', []))} stages): {alphas}\n\n"
      + "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n\n" for p in paths)))
  return paths + [os.path.join(out, "summary.md")]


# ------------------------------------------------------------------ a grid (compare)

def _row_key(entry: dict) -> tuple:
  return (entry["method"], tuple(entry["settings"].items()))


def _label(entry: dict) -> str:
  settings = ", ".join(f"{key}={value}" for key, value in entry["settings"].items())
  return f"{entry['method']} ({settings})" if settings else entry["method"]


def _stat(entry: dict, key: str, spec: str) -> str:
  stat = entry["stats"].get(key)
  return "–" if stat is None else format(stat["mean"], spec)


def _interval(diff: dict | None, spec: str = "+.4f") -> str:
  """A paired difference as `mean [low, high]`, in bold where the interval excludes zero."""
  if diff is None:
    return "–"
  if diff["low"] is None:
    return f"{diff['mean']:{spec}} (1 seed)"
  text = f"{diff['mean']:{spec}} [{diff['low']:{spec}}, {diff['high']:{spec}}]"
  return f"**{text}**" if diff["excludes_zero"] else text


def _by_row(entries: list[dict]) -> tuple[list[float], dict]:
  keeps = sorted({entry["keep_ratio"] for entry in entries}, reverse=True)
  rows: dict = {}
  for entry in entries:
    rows.setdefault(_row_key(entry), {})[entry["keep_ratio"]] = entry
  return keeps, rows


def accuracy_table(entries: list[dict]) -> str:
  """Pruned test accuracy (mean ± std over seeds, the gap to the teacher in brackets) per
  method × keep ratio."""
  keeps, rows = _by_row(entries)
  lines = ["| method | " + " | ".join(f"keep {keep:g}" for keep in keeps) + " |",
           "| --- |" + " --- |" * len(keeps)]
  for cells in rows.values():
    texts = []
    for keep in keeps:
      entry = cells.get(keep)
      if entry is None:
        texts.append("")
        continue
      accuracy, gap = entry["stats"]["pruned_test_accuracy"], entry["stats"]["gap_to_teacher"]
      warned = [s for s, values in entry["per_seed"].items() if values.get("warnings")]
      texts.append(f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f} ({gap['mean']:+.4f})"
                   + (f" ⚠ seeds {', '.join(warned)}: no result" if warned else ""))
    lines.append(f"| {_label(next(iter(cells.values())))} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def paired_table(entries: list[dict], key: str = "pruned_test_accuracy") -> str:
  """Each method's paired per-seed difference from alpha_blend in `key` (mean [95%
  t-interval]; bold where the interval excludes zero) per method × keep ratio."""
  keeps, rows = _by_row(entries)
  lines = ["| method − alpha_blend | " + " | ".join(f"keep {keep:g}" for keep in keeps) + " |",
           "| --- |" + " --- |" * len(keeps)]
  for cells in rows.values():
    first = next(iter(cells.values()))
    if first["method"] == "alpha_blend":
      continue
    texts = [_interval(cells[keep]["paired"].get(key)) if keep in cells else ""
             for keep in keeps]
    lines.append(f"| {_label(first)} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def details_table(entries: list[dict]) -> str:
  """Every (cell, method): accuracy, calibration, their paired differences, overfitting."""
  lines = ["| keep | method | test acc. | val. acc. | Δ test acc. vs alpha_blend | test NLL | "
           "Δ NLL | test ECE | Δ ECE | teacher test acc. | kept / total params | epochs | "
           "val ÷ train loss at the end | val loss above its best | wall s | seeds |",
           "|" + " --- |" * 16]
  for entry in entries:
    stats, diff = entry["stats"], entry["paired"]
    accuracy = stats["pruned_test_accuracy"]
    lines.append(
        f"| {entry['keep_ratio']:g} | {_label(entry)} | {accuracy['mean']:.4f} ± "
        f"{accuracy['std']:.4f} | {_stat(entry, 'pruned_val_accuracy', '.4f')} | "
        f"{_interval(diff.get('pruned_test_accuracy'))} | "
        f"{_stat(entry, 'pruned_test_nll', '.4f')} | {_interval(diff.get('pruned_test_nll'))} | "
        f"{_stat(entry, 'pruned_test_ece', '.4f')} | {_interval(diff.get('pruned_test_ece'))} | "
        f"{_stat(entry, 'teacher_test_accuracy', '.4f')} | "
        f"{_stat(entry, 'params_total_after', '.0f')} / {_stat(entry, 'params_total_before', '.0f')}"
        f" | {_stat(entry, 'epochs_total', '.0f')} | {_stat(entry, 'val_over_train_loss', '.2f')} "
        f"| {_stat(entry, 'val_loss_above_best', '+.0%')} | {_stat(entry, 'wall_seconds', '.0f')} "
        f"| {len(entry['seeds'])} |")
  return "\n".join(lines)


def settings_ranking(entries: list[dict]) -> str:
  """Where a grid has several settings: per keep ratio and method, the settings ranked by
  validation accuracy (the one a researcher may choose by); test accuracy beside it."""
  groups: dict = {}
  for entry in entries:
    groups.setdefault((entry["keep_ratio"], entry["method"]), []).append(entry)
  lines = ["| keep | method | settings, best validation accuracy first (val. / test) |",
           "| --- | --- | --- |"]
  for (keep, method), group in groups.items():
    if len(group) < 2 or any("pruned_val_accuracy" not in e["stats"] for e in group):
      continue
    ranked = sorted(group, key=lambda e: -e["stats"]["pruned_val_accuracy"]["mean"])
    text = "; ".join(f"{', '.join(f'{k}={v}' for k, v in e['settings'].items())} "
                     f"({e['stats']['pruned_val_accuracy']['mean']:.4f} / "
                     f"{e['stats']['pruned_test_accuracy']['mean']:.4f})" for e in ranked)
    lines.append(f"| {keep:g} | {method} | {text} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def pair_table(entries: list[dict], first: str, second: str,
               key: str = "pruned_test_accuracy") -> str:
  """The paired per-seed differences first − second in `key`, per cell (compare --pair)."""
  from alphaprune.compare import pair_entries
  lines = [f"| cell | {first} − {second} ({key}) |", "| --- | --- |"]
  lines += [f"| {cell} | {_interval(diff)} |"
            for cell, diff in pair_entries(entries, first, second, key).items()]
  return "\n".join(lines)


def tuned_table(entries: list[dict]) -> str:
  """Equal tuning effort: per keep ratio, each method at the setting of the grid with its
  best mean validation accuracy, its test accuracy there, and the paired difference from
  alpha_blend at alpha_blend's own best setting."""
  best: dict = {}
  for entry in entries:
    if "pruned_val_accuracy" not in entry["stats"]:
      return ""
    key = (entry["keep_ratio"], entry["method"])
    if (key not in best or entry["stats"]["pruned_val_accuracy"]["mean"]
        > best[key]["stats"]["pruned_val_accuracy"]["mean"]):
      best[key] = entry
  lines = ["| keep | method | best setting (validation) | test acc. | Δ test acc. vs "
           "alpha_blend at its best |", "| --- | --- | --- | --- | --- |"]
  from alphaprune.compare import paired
  for (keep, method), entry in best.items():
    reference = best.get((keep, "alpha_blend"))
    diff = None
    if reference is not None and method != "alpha_blend":
      seeds = [s for s in entry["per_seed"] if s in reference["per_seed"]]
      diff = paired([entry["per_seed"][s]["pruned_test_accuracy"]
                     - reference["per_seed"][s]["pruned_test_accuracy"] for s in seeds])
    accuracy = entry["stats"]["pruned_test_accuracy"]
    setting = ", ".join(f"{k}={v}" for k, v in entry["settings"].items())
    lines.append(f"| {keep:g} | {method} | {setting} | {accuracy['mean']:.4f} ± "
                 f"{accuracy['std']:.4f} | {_interval(diff)} |")
  return "\n".join(lines)


def grid_markdown(grid: dict) -> str:
  entries = grid["entries"]
  seeds = ", ".join(map(str, grid["seeds"]))
  parts = [f"# Pruned test accuracy (mean ± std over seeds {seeds}; in brackets the gap to "
           f"the teacher; ⚠: a seed's run ended at chance accuracy or diverged)\n\n"
           f"{accuracy_table(entries)}",
           "# Paired differences from alpha_blend in test accuracy\n\nPer seed, each method "
           "minus alpha_blend on the same teacher, masks' allocation and batch order; the mean "
           "over seeds and its 95% t-interval, **bold** where the interval excludes zero.\n\n"
           + paired_table(entries),
           "# Every cell\n\nNLL and ECE (15 bins) on the test set; Δ: the paired difference "
           "from alpha_blend as above.\n\n" + details_table(entries)]
  ranking = settings_ranking(entries)
  if ranking:
    parts.append("# Settings ranked by validation accuracy\n\n" + ranking)
    parts.append("# Each method at its best setting (chosen on validation)\n\n"
                 + tuned_table(entries))
  if grid.get("command"):
    made = f"Made by:\n\n```bash\n{grid['command']}\n```"
    if grid.get("code"):
      made += f"\n\non the code of commit {grid['code']}."
    parts.insert(0, made)
  return "\n\n".join(parts) + "\n"


def write_grid(grid: dict, folder: str) -> None:
  """compare.md and the figures of a grid (compare.json's contents) into `folder`."""
  files.write_atomic(os.path.join(folder, "compare.md"), grid_markdown(grid))
  entries = grid["entries"]
  plot_curve(entries, os.path.join(folder, "compare.png"))
  if any(entry["paired"] for entry in entries):
    plot_paired(entries, os.path.join(folder, "paired.png"), panel_key(entries))
  for method in ("alpha_blend", "soft"):
    histories = {cell: runs[method] for cell, runs in grid.get("curves", {}).items()
                 if method in runs}
    if histories:
      plot_losses(histories, os.path.join(folder, "losses.png"), method)
      break
  if any(entry["settings"] for entry in entries):
    plot_epochs(entries, os.path.join(folder, "epochs.png"))
  plot_stages(grid.get("curves", {}), os.path.join(folder, "stages.png"))


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _by_method(entries: list[dict]) -> bool:
  """Whether each method keeps its own colour: not where settings or NAME@KEY=VALUE entries
  share a method."""
  return not any(entry["settings"] or "@" in entry["method"] for entry in entries)


def _colour(method: str, index: int, by_method: bool) -> str:
  base = method.split("@")[0]
  base = base[:-len(RANDOM)] if base.endswith(RANDOM) else base
  return f"C{(METHODS.index(base) if by_method and base in METHODS else index) % 10}"


def _keep_axis(ax, entries):
  ax.set_xscale("log")
  keeps = sorted({entry["keep_ratio"] for entry in entries})
  ax.set_xticks(keeps, [f"{keep:g}" for keep in keeps])
  ax.minorticks_off()
  ax.set_xlabel("fraction of prunable weights kept (log)")


def plot_curve(entries: list[dict], path: str) -> None:
  """Test accuracy against the fraction of weights kept: one line per method (and grid
  setting), error bars over seeds, the teachers as a band."""
  plt = _pyplot()
  _, rows = _by_row(entries)
  fig, ax = plt.subplots(figsize=(8, 5))
  teachers = mean_std([v for entry in entries
                       for v in entry["stats"]["teacher_test_accuracy"]["values"]])
  ax.axhspan(teachers["mean"] - teachers["std"], teachers["mean"] + teachers["std"],
             color="0.5", alpha=0.2, lw=0)
  ax.axhline(teachers["mean"], color="k", ls="--", lw=1,
             label=f"dense teacher {teachers['mean']:.4f} ± {teachers['std']:.4f}")
  by_method = _by_method(entries)
  for index, cells in enumerate(rows.values()):
    row = sorted(cells.values(), key=lambda entry: entry["keep_ratio"])
    method = row[0]["method"]
    ax.errorbar([e["stats"]["kept_fraction"]["mean"] for e in row],
                [e["stats"]["pruned_test_accuracy"]["mean"] for e in row],
                yerr=[e["stats"]["pruned_test_accuracy"]["std"] for e in row], capsize=3,
                marker="o", ms=4, ls=":" if method.endswith(RANDOM) else "-",
                color=_colour(method, index, by_method),
                lw=2.2 if method == "alpha_blend" else 1.2, label=_label(row[0]))
  _keep_axis(ax, entries)
  seeds = max(len(entry["seeds"]) for entry in entries)
  ax.set_ylabel(f"pruned test accuracy (mean ± std, {seeds} seeds)")
  ax.set_title("same teacher, masks' allocation, stages and epoch budget for every method")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def panel_key(entries: list[dict]) -> str | None:
  """The grid's settings joined by "+" where they take 2 to 4 values, else None: the paired
  figure then draws one panel a value, each with its own colours and legend, instead of
  every method × setting in one axes."""
  keys = list(dict.fromkeys(key for entry in entries for key in entry["settings"]))
  values = {tuple(str(entry["settings"].get(key)) for key in keys) for entry in entries}
  return "+".join(keys) if keys and 2 <= len(values) <= 4 else None


def plot_paired(entries: list[dict], path: str, panels: str | None = None) -> None:
  """Each method's paired difference from alpha_blend in test accuracy against the fraction
  kept, with its 95% t-interval: above zero, the method beats alpha_blend. `panels`: a
  setting of the grid (or settings joined by "+", as `compare --grid` joins them) drawn one
  panel a value."""
  plt = _pyplot()
  keys = panels.split("+") if panels else []
  value_of = lambda e: ", ".join(f"{k}={e['settings'].get(k)}" for k in keys)
  values = list(dict.fromkeys(value_of(e) for e in entries)) if panels else [None]
  fig, axes = plt.subplots(1, len(values), figsize=(7 * len(values), 5.6), squeeze=False,
                           sharey=True)
  for ax, value in zip(axes[0], values):
    chosen = [{**e, "settings": {k: v for k, v in e["settings"].items() if k not in keys}}
              for e in entries if value is None or value_of(e) == value]
    _paired_axes(ax, chosen)
    ax.set_title(value if panels else
                 "above zero: the method beats alpha_blend on the same teacher and masks",
                 fontsize=9)
  axes[0][0].set_ylabel("test accuracy − alpha_blend's, paired by seed (95% t-interval)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _paired_axes(ax, entries: list[dict]) -> None:
  _, rows = _by_row(entries)
  ax.axhline(0.0, color="k", lw=1, label="alpha_blend")
  by_method = _by_method(entries)
  rows = [r for r in rows.values() if next(iter(r.values()))["method"] != "alpha_blend"]
  for index, cells in enumerate(rows):
    row = [e for e in sorted(cells.values(), key=lambda e: e["keep_ratio"])
           if "pruned_test_accuracy" in e["paired"]]
    if not row:
      continue
    diffs = [e["paired"]["pruned_test_accuracy"] for e in row]
    shift = 1 + 0.025 * (index - len(rows) / 2)  # side by side at each keep ratio
    low = [d["mean"] - d["low"] if d["low"] is not None else 0 for d in diffs]
    high = [d["high"] - d["mean"] if d["high"] is not None else 0 for d in diffs]
    ax.errorbar([e["keep_ratio"] * shift for e in row], [d["mean"] for d in diffs],
                yerr=[low, high], capsize=3, marker="o", ms=4,
                ls=":" if row[0]["method"].endswith(RANDOM) else "-",
                color=_colour(row[0]["method"], index + 1, by_method), label=_label(row[0]))
  _keep_axis(ax, entries)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)


def plot_losses(histories: dict, path: str, method: str = "alpha_blend") -> bool:
  """Train and validation loss per epoch of `method` in each cell (every seed a line):
  `histories` is {cell name: [each seed's pruning-phase records]}."""
  panels = list(histories.items())[:16]
  if not panels:
    return False
  plt = _pyplot()
  cols = min(4, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  for ax, (cell, runs) in zip(axes.flat, panels):
    for index, history in enumerate(runs):
      epochs = range(1, len(history) + 1)
      ax.plot(epochs, [h["train_loss"] for h in history], color="C0", lw=1,
              label="train" if index == 0 else None)
      ax.plot(epochs, [h["val_loss"] for h in history], color="C1", lw=1, ls="--",
              label="validation" if index == 0 else None)
      if index == 0:
        for j in range(1, len(history)):
          if history[j]["alpha"] != history[j - 1]["alpha"]:
            ax.axvline(j + 0.5, color="0.8", lw=0.6)
    ax.set_title(cell.replace(",", "\n", 1) if "," in cell else cell, fontsize=8)
    ax.set_xlabel("epoch after pretraining (grey: α changes)", fontsize=7)
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


def _mean_curve(runs: list[list[dict]], key) -> np.ndarray | None:
  """The mean over seeds of `key` (a name, or a function of an epoch's record) per epoch;
  None where the runs did not record it."""
  value = key if callable(key) else (lambda h: h.get(key))
  series = [[value(h) for h in run] for run in runs]
  if not series or any(v is None for run in series for v in run):
    return None
  length = min(len(run) for run in series)
  return np.mean([run[:length] for run in series], axis=0)


def _generalisation_gap(record: dict) -> float | None:
  if record.get("train_accuracy") is None:
    return None
  return record["train_accuracy"] - record["val_accuracy"]


def plot_stages(curves: dict, path: str) -> bool:
  """Per cell, every method's mean over seeds per epoch after pretraining: validation
  accuracy, the generalisation gap (training − validation accuracy; comparable across
  losses, unlike the losses themselves), and, where the runs logged them
  (`train.log_student_norms`), the student's gradient norm against 1 − α: under SGD the
  layer form's student gradient is (1 − α)·M⊙∂L/∂W, a line of slope 1 on these axes when
  ∂L/∂W does not change. Nothing is drawn from curves without accuracies (older grids)."""
  cells = [(cell, runs) for cell, runs in curves.items()
           if any(_mean_curve(seeds, "train_accuracy") is not None for seeds in runs.values())]
  if not cells:
    return False
  norms = any(_mean_curve(seeds, "student_grad_norm") is not None
              for _, runs in cells for seeds in runs.values())
  plt = _pyplot()
  fig, axes = plt.subplots(len(cells), 3, figsize=(15, 4.2 * len(cells)), squeeze=False)
  if not norms:  # nothing for the third panel: two panels a cell
    plt.close(fig)
    fig, axes = plt.subplots(len(cells), 2, figsize=(10, 4.2 * len(cells)), squeeze=False)
  for row, (cell, runs) in zip(axes, cells):
    for index, (method, seeds) in enumerate(runs.items()):
      colour, label = f"C{index % 10}", f"{method} ({len(seeds)} seeds)"
      val = _mean_curve(seeds, "val_accuracy")
      gap = _mean_curve(seeds, _generalisation_gap)
      if val is not None:
        row[0].plot(np.arange(1, len(val) + 1), val, color=colour, lw=1, label=label)
      if gap is not None:
        row[1].plot(np.arange(1, len(gap) + 1), gap, color=colour, lw=1, label=label)
      grad = _mean_curve(seeds, "student_grad_norm") if norms else None
      alpha = _mean_curve(seeds, "alpha")
      if grad is not None and alpha is not None:
        x, y = 1 - alpha, grad
        row[2].loglog(x, y, ".", ms=3, color=colour, label=label)
        if not any(line.get_label() == "∝ 1 − α" for line in row[2].lines):
          ends = np.array([x.min(), 1.0])  # through the last stage before α = 0
          row[2].loglog(ends, y[x < 1][-1] / x[x < 1][-1] * ends, ":", color="0.4",
                        label="∝ 1 − α")
    row[0].set_ylabel("validation accuracy")
    row[1].set_ylabel("training − validation accuracy")
    if norms:
      row[2].set_ylabel("student gradient norm (epoch mean)")
      row[2].set_xlabel("1 − α")
    for ax in row[:2]:
      ax.set_xlabel("epoch after pretraining")
    for ax in row:
      ax.grid(alpha=0.3)
      ax.set_title(cell, fontsize=8)
  # One legend for the figure: the methods' colours (and the reference line) are shared.
  labels = {}
  for ax in axes.flat:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      labels.setdefault(label, handle)
  lines = -(-len(labels) // 3)
  fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=3, fontsize=8,
             frameon=False)
  fig.tight_layout(rect=(0, min(0.4, (0.3 * lines + 0.2) / (4.2 * len(cells))), 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def plot_epochs(entries: list[dict], path: str) -> None:
  """Pruned test accuracy against the epochs each (cell, method) trained after pretraining."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5))
  for index, entry in enumerate(entries):
    epochs, accuracy = entry["stats"]["epochs_total"], entry["stats"]["pruned_test_accuracy"]
    ax.errorbar(epochs["mean"], accuracy["mean"], xerr=epochs["std"], yerr=accuracy["std"],
                marker="o", capsize=3, color=f"C{index % 10}",
                label=f"keep {entry['keep_ratio']:g}, {_label(entry)}")
  ax.set_xscale("log")
  ax.set_xlabel("epochs after pretraining (mean over seeds, log)")
  ax.set_ylabel("pruned test accuracy (mean ± std)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def figure_of_grid(folder: str, out: str, select: dict, kind: str = "curve",
                   methods: list[str] | None = None, panels: str | None = None) -> int:
  """One figure of a kept grid (its compare.json), of the entries whose settings match
  `select` (and whose method is among `methods`): the accuracy curve, or the paired
  differences (one panel per value of the setting `panels`). Returns how many were drawn."""
  with open(os.path.join(folder, "compare.json")) as f:
    entries = [entry for entry in json.load(f)["entries"]
               if all(str(entry["settings"].get(key)) == value for key, value in select.items())
               and (not methods or entry["method"] in methods)]
  if not entries:
    raise ValueError(f"no entry of {folder}/compare.json has the settings {select}")
  for entry in entries:  # one setting: the legend need not repeat it
    entry["settings"] = {k: v for k, v in entry["settings"].items() if k not in select}
  if kind == "curve":
    plot_curve(entries, out)
  else:
    plot_paired(entries, out, panels)
  return len(entries)


def main(argv=None):
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", help="a run: redraw its report/")
  parser.add_argument("--grid", help="a kept grid (results/NAME): draw one of its figures")
  parser.add_argument("--select", default="", help="with --grid: KEY=VALUE,... of its settings")
  parser.add_argument("--kind", default="curve", choices=("curve", "paired"))
  parser.add_argument("--methods", default="", help="with --grid: only these methods")
  parser.add_argument("--panels", default=None, help="with --kind=paired: a panel per value "
                                                      "of this setting")
  parser.add_argument("--out", help="with --grid: the PNG to write")
  args = parser.parse_args(argv)
  if args.grid:
    select = dict(item.split("=", 1) for item in args.select.split(",") if item)
    try:
      count = figure_of_grid(args.grid, args.out, select, args.kind,
                             [m for m in args.methods.split(",") if m], args.panels)
    except (OSError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"{args.out}: {count} entries")
    return
  if not args.workdir or not os.path.exists(os.path.join(args.workdir, "metrics.jsonl")):
    print(f"error: {args.workdir} has no metrics.jsonl; give the workdir of a run (or --grid)",
          file=sys.stderr)
    sys.exit(2)
  for p in write_report(args.workdir):
    print(p)


if __name__ == "__main__":
  main()
