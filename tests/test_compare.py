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
          "pruned_val_accuracy": acc - 0.01, "pruned_test_nll": 1.0 - acc,
          "pruned_test_ece": 0.01 * seed, "prunable_params": 100,
          "kept_prunable_params": round(100 * keep),
          "params_total_after": 5 + round(100 * keep), "params_total_before": 105,
          "epochs_total": 12, "wall_seconds": 10.0 + seed}


ACCS = {(0.35, "alpha_blend"): [0.90, 0.92, 0.91], (0.35, "soft"): [0.85, 0.86, 0.84],
        (0.05, "alpha_blend"): [0.70, 0.72, 0.74], (0.05, "soft"): [0.75, 0.71, 0.73]}
TEACHERS = [0.93, 0.94, 0.92]


@pytest.fixture
def grid_root(tmp_path):
  for (keep, method), values in ACCS.items():
    for seed, (acc, teacher) in enumerate(zip(values, TEACHERS)):
      folder = compare.run_dir(str(tmp_path), compare.Cell(keep, ()), seed, method)
      os.makedirs(folder)
      with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(_summary(method, seed, acc, teacher, keep), f)
  return tmp_path


def test_aggregation_keeps_every_seed_and_matches_the_summaries(grid_root, tmp_path):
  cells = [compare.Cell(0.35, ()), compare.Cell(0.05, ())]
  grid = compare.write(str(grid_root), cells, ["alpha_blend", "soft"], [0, 1, 2],
                       str(tmp_path / "kept"), "python -m alphaprune.compare ...")
  assert len(grid["entries"]) == 4
  for entry in grid["entries"]:
    values = ACCS[(entry["keep_ratio"], entry["method"])]
    stats = entry["stats"]
    assert [entry["per_seed"][str(s)]["pruned_test_accuracy"] for s in range(3)] == values
    assert stats["pruned_test_accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert stats["pruned_test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    gaps = np.array(values) - np.array(TEACHERS)
    assert stats["gap_to_teacher"]["mean"] == pytest.approx(gaps.mean())
    assert stats["kept_fraction"]["mean"] == pytest.approx(entry["keep_ratio"])
  for folder in (grid_root, tmp_path / "kept"):
    assert json.loads((folder / "compare.json").read_text()) == grid
    md = (folder / "compare.md").read_text()
    assert "| method | keep 0.35 | keep 0.05 |" in md
    assert "| soft | 0.8500 ± 0.0100 (-0.0800) | 0.7300 ± 0.0200 (-0.2000) |" in md
    assert (folder / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "paired.png").read_bytes()[:4] == b"\x89PNG"
  assert (tmp_path / "kept" / "COMMAND").read_text() == "python -m alphaprune.compare ...\n"
  assert not (grid_root / "COMMAND").exists()


def test_paired_differences_and_their_t_intervals_by_hand(grid_root):
  """soft − alpha_blend per seed: (−0.05, −0.06, −0.07) at keep 0.35, (+0.05, −0.01, −0.01)
  at 0.05; 95% interval mean ± t(0.975, 2)·sd/√3 with t = 4.302653."""
  cells = [compare.Cell(0.35, ()), compare.Cell(0.05, ())]
  grid = compare.write(str(grid_root), cells, ["alpha_blend", "soft"], [0, 1, 2])
  soft = {e["keep_ratio"]: e["paired"] for e in grid["entries"] if e["method"] == "soft"}
  for keep, diffs, excludes in ((0.35, [-0.05, -0.06, -0.07], True),
                                (0.05, [0.05, -0.01, -0.01], False)):
    got = soft[keep]["pruned_test_accuracy"]
    half = 4.302653 * np.std(diffs, ddof=1) / np.sqrt(3)
    assert got["mean"] == pytest.approx(np.mean(diffs))
    assert (got["low"], got["high"]) == pytest.approx((np.mean(diffs) - half,
                                                       np.mean(diffs) + half), abs=1e-6)
    assert got["excludes_zero"] is excludes and got["n"] == 3
  # The NLL differences are the accuracy differences negated (NLL = 1 − acc here).
  assert soft[0.35]["pruned_test_nll"]["mean"] == pytest.approx(0.06)
  # alpha_blend is the reference: no difference from itself.
  assert all(not e["paired"] for e in grid["entries"] if e["method"] == "alpha_blend")
  # The table: bold where the interval excludes zero, plain where it does not.
  md = (grid_root / "compare.md").read_text()
  assert ("| soft | **-0.0600 [-0.0848, -0.0352]** | +0.0100 [-0.0761, +0.0961] |"
          in md.splitlines())


def test_a_kept_grid_is_redrawn_from_its_compare_json_alone(grid_root, tmp_path):
  cells = [compare.Cell(0.35, ()), compare.Cell(0.05, ())]
  compare.write(str(grid_root), cells, ["alpha_blend", "soft"], [0, 1, 2], str(tmp_path / "kept"))
  kept = tmp_path / "kept"
  before = (kept / "compare.md").read_text()
  for name in ("compare.md", "compare.png", "paired.png"):
    (kept / name).unlink()
  assert compare.main([f"--redraw={kept}"]) == 0
  assert (kept / "compare.md").read_text() == before
  assert (kept / "paired.png").read_bytes()[:4] == b"\x89PNG"


def _cells_of(markdown: str) -> dict:
  """{(method, keep): (mean, std, gap)} from the first table of compare.md."""
  lines = markdown.split("# Pruned test accuracy", 1)[1].split("\n\n")[1].splitlines()
  keeps = [float(h.split()[1]) for h in lines[0].strip("|").split("|")[1:]]
  out = {}
  for line in lines[2:]:
    method, *entries = [e.strip() for e in line.strip("|").split("|")]
    for keep, entry in zip(keeps, entries):
      mean, std, gap = re.match(r"(\S+) ± (\S+) \((\S+)\)", entry).groups()  # ⚠ may follow
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
                       f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True", "--config.data.manual_dir="])
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
