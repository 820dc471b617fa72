import json

import numpy as np

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
