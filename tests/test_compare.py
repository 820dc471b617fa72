"""compare: statistics and tables from the runs' own summaries, and a real smoke grid."""

import json
import os
import re
import sys

import numpy as np
import pytest

from alphaprune import compare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _summary(method, seed, acc, teacher, keep):
  return {"method": method, "pruned_test_accuracy": acc, "teacher_test_accuracy": teacher,
          "prunable_params": 100, "kept_prunable_params": round(100 * keep),
          "params_total_after": 5 + round(100 * keep), "params_total_before": 105,
          "epochs_total": 12, "wall_seconds": 10.0 + seed}


def test_aggregation_matches_the_per_run_summaries(tmp_path):
  cells = [compare.Cell(0.35, ()), compare.Cell(0.05, ())]
  accs = {(0.35, "alpha_blend"): [0.90, 0.92, 0.91], (0.35, "soft"): [0.85, 0.80, 0.83],
          (0.05, "alpha_blend"): [0.70, 0.72, 0.74], (0.05, "soft"): [0.75, 0.71, 0.73]}
  teachers = [0.93, 0.94, 0.92]
  for (keep, method), values in accs.items():
    for seed, (acc, teacher) in enumerate(zip(values, teachers)):
      folder = compare.run_dir(str(tmp_path), compare.Cell(keep, ()), seed, method)
      os.makedirs(folder)
      with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(_summary(method, seed, acc, teacher, keep), f)
  stats = compare.write(str(tmp_path), cells, ["alpha_blend", "soft"], [0, 1, 2])
  assert len(stats) == 4
  for s in stats:
    values = accs[(s["keep_ratio"], s["method"])]
    assert s["pruned_test_accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert s["pruned_test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    gaps = np.array(values) - np.array(teachers)
    assert s["gap_to_teacher"]["mean"] == pytest.approx(gaps.mean())
    assert s["gap_to_teacher"]["std"] == pytest.approx(gaps.std(ddof=1))
    assert s["kept_fraction"]["mean"] == pytest.approx(s["keep_ratio"])
  assert json.loads((tmp_path / "compare.json").read_text()) == stats
  md = (tmp_path / "compare.md").read_text()
  assert "| method | keep 0.35 | keep 0.05 |" in md
  assert "| soft | 0.8267 ± 0.0252 (-0.1033) | 0.7300 ± 0.0200 (-0.2000) |" in md
  assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def _cells_of(markdown: str) -> dict:
  """{(method, keep): (mean, std, gap)} from the first table of compare.md."""
  lines = [l for l in markdown.splitlines() if l.startswith("|")]
  keeps = [float(h.split()[1]) for h in lines[0].strip("|").split("|")[1:]]
  out = {}
  for line in lines[2:]:
    if line.startswith("| keep |"):
      break
    method, *entries = [e.strip() for e in line.strip("|").split("|")]
    for keep, entry in zip(keeps, entries):
      mean, std, gap = re.fullmatch(r"(\S+) ± (\S+) \((\S+)\)", entry).groups()
      out[(method, keep)] = (float(mean), float(std), float(gap))
  return out


def test_a_real_smoke_grid_tabulates_its_runs(tmp_path):
  """The real driver (TFDS mock data) over two keep ratios and a grid axis: every table cell
  is its run's summary, and every run used the one teacher the first alpha_blend pretrained."""
  launcher = f"{sys.executable} {os.path.join(REPO, 'tests', 'mock_main.py')}"
  code = compare.main([f"--config={REPO}/configs/fashion_mnist.py:smoke", "--seeds=0",
                       f"--workdir={tmp_path}", "--methods=alpha_blend,soft",
                       "--keep-ratios=0.5,0.2", "--grid=prune.scope=global", "--parallel=2",
                       f"--launcher={launcher}",
                       f"--config.data.data_dir={tmp_path}/tfds", "--config.data.manual_dir="])
  cell = "keep_{:g},prune.scope=global".format
  assert code == 0, (tmp_path / cell(0.2) / "seed_0" / "soft.log").read_text()[-2000:]
  cells = _cells_of((tmp_path / "compare.md").read_text())
  assert len(cells) == 4
  teachers = set()
  for (label, keep), (mean, std, gap) in cells.items():
    method, settings = label.split(" ", 1)
    assert settings == "(prune.scope=global)"
    run = tmp_path / cell(keep) / "seed_0" / method
    s = json.loads((run / "summary.json").read_text())
    assert json.loads((run / "config.json").read_text())["prune"]["scope"] == "global"
    assert (mean, std) == (round(s["pruned_test_accuracy"], 4), 0.0)
    assert gap == pytest.approx(s["pruned_test_accuracy"] - s["teacher_test_accuracy"],
                                abs=1e-4)
    assert abs(s["kept_prunable_params"] / s["prunable_params"] - keep) < 0.01
    teachers.add(s["teacher_test_accuracy"])
  assert len(teachers) == 1
  for name in ("compare.png", "losses.png", "epochs.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
