"""Seed sweeps: one run per seed, resumable, mean ± std that match the runs."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("sweep", os.path.join(REPO, "launch", "sweep.py"))
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)

LAUNCHER = f"{sys.executable} {os.path.join(REPO, 'tests', 'mock_main.py')}"


def _sweep(root, seeds, tmp_path):
  return sweep.main([f"--config={REPO}/configs/fashion_mnist.py:smoke", f"--seeds={seeds}",
                     f"--workdir={root}", "--parallel=2", f"--launcher={LAUNCHER}",
                     f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True", "--config.data.manual_dir="])


def test_sweep_aggregates_skips_and_repeats_exactly(tmp_path, capsys):
  # (Seed parsing, skipping and failures are the job runner's: tests/test_jobs.py; that a
  # seed gives the same run twice, the kill-and-resume tests in tests/test_train.py.)
  root = tmp_path / "sweep"
  assert _sweep(root, "0,2", tmp_path) == 0
  result = json.loads((root / "sweep.json").read_text())
  assert result["seeds"] == [0, 2]
  summaries = [json.loads((root / f"seed_{s}" / "summary.json").read_text()) for s in (0, 2)]
  for key in ("pruned_test_accuracy", "teacher_test_accuracy", "kept_prunable_params"):
    values = [s[key] for s in summaries]
    assert result["metrics"][key]["values"] == values
    assert result["metrics"][key]["mean"] == pytest.approx(np.mean(values))
    assert result["metrics"][key]["std"] == pytest.approx(np.std(values, ddof=1))
  assert [s["seed"] for s in summaries] == [0, 2]
  assert "| pruned_test_accuracy |" in (root / "sweep.md").read_text()
  # A rerun skips the finished seeds.
  capsys.readouterr()
  assert _sweep(root, "0,2", tmp_path) == 0
  assert capsys.readouterr().out.count("finished already, skipped") == 2
  # A seed run again from scratch repeats its run exactly: every epoch but the seconds.
  again = tmp_path / "again"
  assert _sweep(again, "2", tmp_path) == 0
  strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                        for line in path.read_text().splitlines()]
  assert strip(again / "seed_2" / "metrics.jsonl") == strip(root / "seed_2" / "metrics.jsonl")
  first, second = (json.loads((folder / "seed_2" / "summary.json").read_text())
                   for folder in (root, again))
  assert first["pruned_test_accuracy"] == second["pruned_test_accuracy"]
