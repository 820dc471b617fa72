import json

import numpy as np
import pytest

from alphaprune import report

HISTORY = [
    {"phase": "pretrain", "stage": 0, "alpha": 0.0, "epoch": 1, "lr": 1e-3, "train_loss": 1.0,
     "train_accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.45, "seconds": 1.0},
    {"phase": "prune", "stage": 0, "alpha": 0.5, "epoch": 1, "lr": 1e-3, "train_loss": 0.9,
     "train_accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.55, "seconds": 1.0},
    {"phase": "prune", "stage": 0, "alpha": 0.5, "epoch": 2, "lr": 5e-4, "train_loss": 0.8,
     "train_accuracy": 0.65, "val_loss": 0.95, "val_accuracy": 0.6, "seconds": 1.0},
    {"phase": "prune", "stage": 1, "alpha": 0.0, "epoch": 3, "lr": 1e-3, "train_loss": 0.7,
     "train_accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.62, "seconds": 1.0},
    {"phase": "finetune", "stage": 2, "alpha": 0.0, "epoch": 4, "lr": 1e-3, "train_loss": 0.6,
     "train_accuracy": 0.75, "val_loss": 0.85, "val_accuracy": 0.64, "seconds": 1.0},
]


def test_figure_data_match_the_metrics(tmp_path):
  c = report.curves(HISTORY)
  np.testing.assert_array_equal(c["val_accuracy"], [h["val_accuracy"] for h in HISTORY])
  np.testing.assert_array_equal(c["lr"], [1e-3, 1e-3, 5e-4, 1e-3, 1e-3])
  assert c["boundaries"] == [1.5, 3.5, 4.5]  # between pretrain|stage 0|stage 1|finetune
  ends = report.stage_ends(HISTORY)
  np.testing.assert_array_equal(ends["alpha"], [0.5, 0.0, 0.0])
  np.testing.assert_array_equal(ends["val_accuracy"], [0.6, 0.62, 0.64])


def test_write_report_makes_four_pngs_and_a_summary(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(h) + "\n" for h in HISTORY)
  (tmp_path / "summary.json").write_text(json.dumps(
      {"pruned_test_accuracy": 0.61, "teacher_val_accuracy": 0.7, "alphas": [0.5, 0.0]}))
  paths = report.write_report(str(tmp_path))
  for name in ("accuracy.png", "loss.png", "alpha_accuracy.png", "lr.png"):
    data = (tmp_path / "report" / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  summary = (tmp_path / "report" / "summary.md").read_text()
  assert "| pruned_test_accuracy | 0.6100 |" in summary and "0.500, 0.000" in summary
  assert len(paths) == 5


def test_stage_curves_average_seeds_and_skip_older_grids(tmp_path):
  from alphaprune import report
  def run(offset):
    return [{"alpha": a, "train_accuracy": 0.9 + offset, "val_accuracy": 0.8,
             "student_grad_norm": (1 - a) * 2} for a in (0.75, 0.5, 0.0)]
  seeds = [run(0.0), run(0.02)]
  assert report._mean_curve(seeds, report._generalisation_gap) == pytest.approx([0.11] * 3)
  assert report._mean_curve(seeds, "student_update_norm") is None  # not logged
  assert report.plot_stages({"keep_0.35": {"alpha_blend": seeds}}, str(tmp_path / "s.png"))
  assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
  older = {"keep_0.35": {"alpha_blend": [[{"alpha": 0.5, "train_loss": 1, "val_loss": 1}]]}}
  assert not report.plot_stages(older, str(tmp_path / "old.png"))
  assert not (tmp_path / "old.png").exists()


def test_the_paired_figure_takes_a_panel_per_setting_of_a_small_grid():
  entry = lambda **settings: {"settings": settings}
  rates = [entry(**{"train.learning_rate": r}) for r in ("0.001", "0.01", "0.1")]
  assert report.panel_key(rates) == "train.learning_rate"
  joined = [entry(a="1", b="2"), entry(a="5", b="4"), entry(a="1", b="2")]
  assert report.panel_key(joined) == "a+b"
  assert report.panel_key([entry(), entry()]) is None  # no grid: one axes
  assert report.panel_key([entry(s=str(v)) for v in range(5)]) is None  # too many panels
  assert report.panel_key([entry(s="x")]) is None
