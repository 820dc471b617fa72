"""One job runner for compare and sweeps: seeds parsed alike, finished jobs skipped."""

import json
import os
import sys

import pytest

from alphaprune import compare, jobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = f"{sys.executable} {os.path.join(REPO, 'tests', 'fake_main.py')}"


@pytest.mark.parametrize("text,seeds", [("0-2", [0, 1, 2]), ("1,3", [1, 3]),
                                        ("0-2,5", [0, 1, 2, 5]), ("7", [7])])
def test_parse_seeds(text, seeds):
  assert jobs.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["1,1", "", "a-b", "-1", "3-1"])
def test_parse_seeds_refuses_nonsense_in_one_line(text):
  with pytest.raises(ValueError) as e:
    jobs.parse_seeds(text)
  assert "\n" not in str(e.value) and "--seeds" in str(e.value)


def _compare(root, seeds, env_fail="", monkeypatch=None):
  monkeypatch.setenv("FAKE_FAIL", env_fail)
  return compare.main(["--config=configs/fashion_mnist.py:smoke", f"--seeds={seeds}",
                       f"--workdir={root}", "--methods=alpha_blend,scratch,one_shot",
                       f"--launcher={LAUNCHER}", "--config.train.max_epochs_per_stage=1"])


def test_compare_runs_listed_seeds_skips_finished_and_shares_the_teacher(tmp_path, monkeypatch,
                                                                        capsys):
  assert _compare(tmp_path, "1,3", monkeypatch=monkeypatch) == 0
  stats = json.loads((tmp_path / "compare.json").read_text())
  assert stats["scratch"]["seeds"] == [1, 3]
  assert stats["one_shot"]["pruned_test_accuracy"]["values"] == [0.71, 0.73]
  log = (tmp_path / "seed_3" / "scratch.log").read_text()
  assert f"--config.teacher.checkpoint={tmp_path}/seed_3/alpha_blend/teacher" in log
  assert "--config.train.max_epochs_per_stage=1" in log and "--config.method=scratch" in log
  capsys.readouterr()
  assert _compare(tmp_path, "1,3", monkeypatch=monkeypatch) == 0
  assert capsys.readouterr().out.count("finished already, skipped") == 6


def test_a_failed_teacher_run_skips_its_seed_and_fails_the_whole(tmp_path, monkeypatch, capsys):
  assert _compare(tmp_path, "0-1", env_fail="1:alpha_blend", monkeypatch=monkeypatch) == 1
  assert (tmp_path / "seed_0" / "scratch" / "summary.json").exists()
  assert not (tmp_path / "seed_1" / "scratch").exists()  # no teacher, so never started
  assert "error: seed 1 alpha_blend failed" in capsys.readouterr().err
  # Fixed, the same command finishes only what is missing.
  capsys.readouterr()
  assert _compare(tmp_path, "0-1", monkeypatch=monkeypatch) == 0
  assert capsys.readouterr().out.count("finished already, skipped") == 3


def test_bad_seeds_are_a_usage_error(tmp_path, capsys):
  assert compare.main(["--config=x.py", f"--workdir={tmp_path}", "--seeds=2-x"]) == 2
  assert capsys.readouterr().err.startswith("error: --seeds='2-x'")
  assert not os.listdir(tmp_path)
