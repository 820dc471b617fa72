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


def _compare(root, seeds, *extra, env_fail="", monkeypatch=None):
  monkeypatch.setenv("FAKE_FAIL", env_fail)
  return compare.main(["--config=configs/fashion_mnist.py:smoke", f"--seeds={seeds}",
                       f"--workdir={root}", "--methods=alpha_blend,scratch,one_shot",
                       f"--launcher={LAUNCHER}", "--config.train.max_epochs_per_stage=1",
                       *extra])


def _entry(grid, method, keep=0.35, **settings):
  [entry] = [e for e in grid["entries"] if (e["method"], e["keep_ratio"], e["settings"]) ==
             (method, keep, settings)]
  return entry


def test_compare_runs_listed_seeds_skips_finished_and_shares_the_teacher(tmp_path, monkeypatch,
                                                                        capsys):
  assert _compare(tmp_path, "1,3", monkeypatch=monkeypatch) == 0
  grid = json.loads((tmp_path / "compare.json").read_text())
  assert _entry(grid, "scratch")["seeds"] == [1, 3]
  assert _entry(grid, "one_shot")["stats"]["pruned_test_accuracy"]["values"] == \
      pytest.approx([0.745, 0.765])
  log = (tmp_path / "keep_0.35" / "seed_3" / "scratch.log").read_text()
  assert f"--config.teacher.checkpoint={tmp_path}/keep_0.35/seed_3/alpha_blend/teacher" in log
  assert "--config.train.max_epochs_per_stage=1" in log and "--config.method=scratch" in log
  capsys.readouterr()
  assert _compare(tmp_path, "1,3", monkeypatch=monkeypatch) == 0
  assert capsys.readouterr().out.count("finished already, skipped") == 6


def test_a_failed_teacher_run_skips_its_seed_and_fails_the_whole(tmp_path, monkeypatch, capsys):
  assert _compare(tmp_path, "0-1", env_fail="1:alpha_blend", monkeypatch=monkeypatch) == 1
  cell = tmp_path / "keep_0.35"
  assert (cell / "seed_0" / "scratch" / "summary.json").exists()
  assert not (cell / "seed_1" / "scratch").exists()  # no teacher, so never started
  assert "error: 1 run(s) failed, first keep_0.35 seed 1 alpha_blend" in capsys.readouterr().err
  # Fixed, the same command finishes only what is missing.
  capsys.readouterr()
  assert _compare(tmp_path, "0-1", monkeypatch=monkeypatch) == 0
  assert capsys.readouterr().out.count("finished already, skipped") == 3


def _args(log_path):
  line = next(l for l in log_path.read_text().splitlines() if l.startswith("args:"))
  return dict(a.lstrip("-").split("=", 1) for a in json.loads(line[len("args:"):]))


def test_keep_ratios_and_grid_cells_each_get_every_method_and_the_right_teacher(tmp_path,
                                                                                monkeypatch):
  assert _compare(tmp_path, "0", "--keep-ratios=0.35,0.05", "--grid=loss.reduction=mean,sum",
                  "--grid=teacher.epochs=1,2", "--methods=alpha_blend,one_shot_random",
                  monkeypatch=monkeypatch) == 0
  cells = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
  assert cells == sorted(f"keep_{k},loss.reduction={r},teacher.epochs={e}"
                         for k in ("0.35", "0.05") for r in ("mean", "sum") for e in (1, 2))
  for cell in cells:
    for method in ("alpha_blend", "one_shot_random"):
      args = _args(tmp_path / cell / "seed_0" / f"{method}.log")
      keep, reduction, epochs = (part.split("_", 1)[-1].split("=")[-1]
                                 for part in cell.split(","))
      assert (args["config.prune.keep_ratio"], args["config.loss.reduction"],
              args["config.teacher.epochs"]) == (keep, reduction, epochs)
      # The teacher: pretrained once per teacher.epochs value, by the first such cell.
      provider = f"keep_0.35,loss.reduction=mean,teacher.epochs={epochs}"
      if (cell, method) == (provider, "alpha_blend"):
        assert "config.teacher.checkpoint" not in args
      else:
        assert args["config.teacher.checkpoint"] == \
            f"{tmp_path}/{provider}/seed_0/alpha_blend/teacher"
      if method == "one_shot_random":
        assert (args["config.method"], args["config.prune.criterion"]) == ("one_shot", "random")
  grid = json.loads((tmp_path / "compare.json").read_text())
  assert len(grid["entries"]) == 16
  stats = _entry(grid, "one_shot_random", 0.05,
                 **{"loss.reduction": "sum", "teacher.epochs": "2"})["stats"]
  assert stats["pruned_test_accuracy"]["mean"] == pytest.approx(0.5 + 0.2 + 0.005 + 0.001)
  assert stats["kept_fraction"]["mean"] == pytest.approx(0.05)
  # fake_main's losses: train 1/e, validation 1.1/e over epochs 1–4, so it ends at its best.
  assert stats["val_over_train_loss"]["mean"] == pytest.approx(1.1)
  assert stats["val_loss_above_best"]["mean"] == pytest.approx(0.0)
  for name in ("compare.png", "losses.png", "epochs.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name


def test_grid_axes_multiply_and_joined_keys_vary_together():
  grid = compare.parse_grid(["a.b=1,2", "c+d=x+y,z+w"])
  assert grid == [(("a.b", "1"), ("c", "x"), ("d", "y")), (("a.b", "1"), ("c", "z"), ("d", "w")),
                  (("a.b", "2"), ("c", "x"), ("d", "y")), (("a.b", "2"), ("c", "z"), ("d", "w"))]
  assert compare.parse_grid([]) == [()]


@pytest.mark.parametrize("extra,needle", [
    (["--grid=nosuch.key=1,2"], "no config key 'nosuch.key'"),
    (["--grid=loss.reduction"], "--grid='loss.reduction': give KEY=V1,V2"),
    (["--grid=loss.kind+loss.reduction=regression+sum,classification"], "KEY1+KEY2"),
    (["--grid=loss.kind=regression", "--grid=seed+loss.kind=1+regression"], "set by compare"),
    (["--grid=prune.keep_ratio=0.1,0.2"], "set by compare itself"),
    (["--keep-ratios=0.35,1.5"], "--keep-ratios='0.35,1.5'"),
    (["--keep-ratios=0.1", "--config.prune.keep_ratio=0.2"], "give keep ratios once"),
    (["--methods=gmp_random,alpha_blend"], "gmp_random"),
    (["--methods=one_shot"], "needs alpha_blend"),
])
def test_bad_grids_and_ratios_are_one_line_and_write_nothing(tmp_path, extra, needle, capsys,
                                                            monkeypatch):
  assert _compare(tmp_path, "0", *extra, monkeypatch=monkeypatch) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and needle in err[0], err
  assert not os.listdir(tmp_path)


def test_bad_seeds_are_a_usage_error(tmp_path, capsys):
  assert compare.main(["--config=x.py", f"--workdir={tmp_path}", "--seeds=2-x"]) == 2
  assert capsys.readouterr().err.startswith("error: --seeds='2-x'")
  assert not os.listdir(tmp_path)
