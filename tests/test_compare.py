import json

import numpy as np
import pytest

from alphaprune import compare


def _summary(method, seed, acc, teacher):
  return {"method": method, "pruned_test_accuracy": acc, "teacher_test_accuracy": teacher,
          "kept_prunable_params": 35, "params_total_after": 40, "params_total_before": 105,
          "epochs_total": 12, "wall_seconds": 10.0 + seed}


def test_aggregation_matches_the_per_run_summaries(tmp_path):
  accs = {"alpha_blend": [0.90, 0.92, 0.91], "scratch": [0.85, 0.80, 0.83]}
  teachers = [0.93, 0.94, 0.92]
  for method, values in accs.items():
    for seed, (acc, teacher) in enumerate(zip(values, teachers)):
      folder = tmp_path / f"seed_{seed}" / method
      folder.mkdir(parents=True)
      (folder / "summary.json").write_text(json.dumps(_summary(method, seed, acc, teacher)))
  stats = compare.write(str(tmp_path), list(accs), [0, 1, 2])
  for method, values in accs.items():
    s = stats[method]
    assert s["pruned_test_accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert s["pruned_test_accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    gaps = np.array(values) - np.array(teachers)
    assert s["gap_to_teacher"]["mean"] == pytest.approx(gaps.mean())
    assert s["gap_to_teacher"]["std"] == pytest.approx(gaps.std(ddof=1))
    assert s["epochs_total"]["values"] == [12, 12, 12]
  assert json.loads((tmp_path / "compare.json").read_text()) == stats
  md = (tmp_path / "compare.md").read_text()
  assert "| alpha_blend | 0.9100 ± 0.0100 |" in md
  assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_method_is_refused(capsys):
  assert compare.main(["--config=x.py", "--workdir=/tmp/never", "--methods=alpha_blend,magic"]) == 2
  assert "magic" in capsys.readouterr().err
