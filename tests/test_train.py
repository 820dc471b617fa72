"""The whole pipeline through the real `run()`, on TFDS mock data."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alphaprune import checkpoint, export, masks as masks_lib, train, tree
from alphaprune import workdir as workdir_lib
from alphaprune.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import fashion_mnist  # noqa: E402

METRIC_KEYS = {"phase", "stage", "alpha", "epoch", "lr", "train_loss", "train_accuracy",
               "val_loss", "val_accuracy", "seconds"}
SUMMARY_KEYS = {"method", "teacher_test_accuracy", "pruned_test_accuracy", "keep_ratio",
                "prunable_params", "kept_prunable_params", "params_total_before",
                "params_total_after", "alphas", "epochs_total", "wall_seconds"}


def smoke(**overrides):
  """The smoke config on TFDS mock data (never built from the real IDX files)."""
  c = fashion_mnist.get_config("smoke")
  c.data.manual_dir = ""
  c.update_from_flattened_dict(overrides)  # dotted keys, as on the command line
  return c


def run_mock(config, workdir, examples=120):
  with tfds.testing.mock_data(num_examples=examples):
    return train.run(config, str(workdir))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = smoke(**{"data.data_dir": str(workdir / "tfds"), "data.prepare": True, "checkpoint.keep": 2})
  return workdir, config, run_mock(config, workdir)


@contextlib.contextmanager
def _killed_in_the_third_prune_epoch(monkeypatch):
  """Inside the block, a run dies (RuntimeError "killed") as its third prune epoch starts."""
  real, prune_epochs = train.train_one_epoch, []

  def dies_at_the_third_prune_epoch(state, stage, k, phase, *rest):
    if phase.name == "prune" and len(prune_epochs) == 2:
      raise RuntimeError("killed")
    prune_epochs.append(phase.name)
    return real(state, stage, k, phase, *rest)

  with monkeypatch.context() as m:
    m.setattr(train, "train_one_epoch", dies_at_the_third_prune_epoch)
    yield


def test_end_to_end_summary_metrics_and_export(finished):
  workdir, config, summary = finished
  assert SUMMARY_KEYS <= set(summary)
  with open(workdir / "summary.json") as f:
    assert json.load(f) == summary
  assert summary["alphas"] == [0.5, 0.0] and summary["method"] == "alpha_blend"
  assert abs(summary["kept_prunable_params"] - 0.35 * summary["prunable_params"]) <= 3
  assert summary["params_total_after"] == (summary["params_total_before"]
                                           - summary["prunable_params"]
                                           + summary["kept_prunable_params"])
  metrics = read_metrics(workdir)
  assert all(METRIC_KEYS <= set(m) for m in metrics)
  assert [m["phase"] for m in metrics] == ["pretrain"] * 2 + ["prune"] * 4 + ["finetune"]
  assert [m["alpha"] for m in metrics if m["phase"] != "pretrain"] == [0.5, 0.5, 0, 0, 0]
  assert [m["epoch"] for m in metrics if m["phase"] != "pretrain"] == [1, 2, 3, 4, 5]
  assert summary["epochs_total"] == 5
  # The learning rate is back at its initial value at the start of every stage.
  starts = [m for i, m in enumerate(metrics) if i == 0 or
            (m["phase"], m["stage"]) != (metrics[i - 1]["phase"], metrics[i - 1]["stage"])]
  assert all(m["lr"] == config.train.learning_rate for m in starts[1:])
  # The exported model alone, reloaded from disk, scores what the blended model did at α = 0.
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  variables, meta = checkpoint.load_model(str(workdir / "export"))
  kernels = [v for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]
             if "kernel" in jax.tree_util.keystr(p)]
  nonzero = sum(int(np.count_nonzero(k)) for k in kernels)
  assert nonzero <= summary["kept_prunable_params"]
  assert meta["kept_prunable_params"] == summary["kept_prunable_params"]
  # Unstructured masks export densely: the teacher's shapes, zeros exactly where pruned.
  assert meta["compact"] is False and meta["speedup"] == export.DENSE
  teacher, _ = checkpoint.load_model(str(workdir / "teacher"))
  masks = masks_lib.compute_masks(teacher["params"], keep_ratio=0.35)  # the run's, recomputed
  flat_export, flat_teacher = tree.flatten(variables["params"]), tree.flatten(teacher["params"])
  assert {p: v.shape for p, v in flat_export.items()} == {p: v.shape for p, v in flat_teacher.items()}
  for path, mask in tree.flatten(masks).items():
    np.testing.assert_array_equal(np.asarray(flat_export[path]) != 0, np.asarray(mask))
    assert meta["sparsity_per_layer"][path] == pytest.approx(1 - np.mean(mask))
  assert set(meta["sparsity_per_layer"]) == {"fc1/dense/kernel", "fc2/dense/kernel",
                                             "head/dense/kernel"}
  assert summary["train_epoch_compilations"] == 1
  assert os.listdir(workdir / "tensorboard")


def _last_prune_state(workdir):
  checkpoints = checkpoint.RunCheckpoints(str(workdir / "checkpoints" / "prune"))
  state, _ = checkpoints.restore(checkpoints.steps()[-1], None)
  checkpoints.close()
  return state


def test_a_frozen_teacher_ends_the_prune_phase_bit_for_bit_as_it_began(finished):
  """Every leaf of the teacher's branch (kernels and biases) after the last epoch equals the
  pretrained teacher's; the student trained its own biases."""
  workdir, _, _ = finished
  teacher, _ = checkpoint.load_model(str(workdir / "teacher"))
  state = _last_prune_state(workdir)
  assert int(state["epoch"]) == 5
  flat_teacher = tree.flatten(teacher["params"])
  branch = tree.flatten(state["params"]["teacher"])
  assert set(branch) == set(flat_teacher)  # the MLP: nothing but kernels and biases
  for path, value in branch.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_teacher[path]), err_msg=path)
  student = tree.flatten(state["params"]["student"])
  assert not np.array_equal(student["fc1/dense/bias"], flat_teacher["fc1/dense/bias"])


def test_report_of_a_finished_run_draws_its_metrics(finished):
  from alphaprune import report
  workdir, _, summary = finished
  paths = report.write_report(str(workdir))
  for name in ("accuracy.png", "loss.png", "alpha_accuracy.png", "lr.png", "summary.md"):
    assert (workdir / "report" / name).stat().st_size > 0
  metrics = read_metrics(workdir)
  curves = report.curves(report.read_history(str(workdir)))
  np.testing.assert_array_equal(curves["val_accuracy"], [m["val_accuracy"] for m in metrics])
  np.testing.assert_array_equal(curves["lr"], [m["lr"] for m in metrics])
  ends = report.stage_ends(metrics)
  assert list(ends["alpha"]) == [0.5, 0.0, 0.0]  # two α-stages, then fine-tuning
  assert f"{summary['pruned_test_accuracy']:.4f}" in (workdir / "report" / "summary.md").read_text()
  assert len(paths) == 5


def test_stage_advances_early_after_n_plateau_cuts(tmp_path):
  # min_delta so large that no epoch counts as an improvement after the first:
  # with patience 1 the learning rate is cut after every epoch but the first.
  config = smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "train.advance_after_cuts": 1,
                    "train.max_epochs_per_stage": 5, "train.plateau.patience": 1,
                    "train.plateau.min_delta": 100.0, "train.finetune_epochs": 0})
  run_mock(config, tmp_path)
  prune = [m for m in read_metrics(tmp_path) if m["phase"] == "prune"]
  per_stage = [sum(1 for m in prune if m["stage"] == k) for k in (0, 1)]
  assert per_stage == [2, 2]  # not 5: each stage ends at its first cut
  assert [m["lr"] for m in prune] == [1e-3, 1e-3, 1e-3, 1e-3]  # reset at each new stage


def test_stage_end_checkpoints_are_kept(finished):
  workdir, _, _ = finished
  steps = checkpoint.RunCheckpoints(str(workdir / "checkpoints" / "prune")).steps()
  # Checkpoints are numbered by optimizer steps: 120 mock examples, 20% held out, batches
  # of 32, so 3 steps an epoch. keep=2 keeps the two latest epochs; every stage end
  # (epochs 2, 4, 5) is kept forever.
  assert {6, 12, 15} <= set(steps) and 3 not in steps and 9 not in steps


def test_corrupt_latest_checkpoint_is_skipped(finished, tmp_path):
  workdir, config, summary = finished
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  ckpt_dir = copy / "checkpoints" / "prune"
  latest = max(checkpoint.RunCheckpoints(str(ckpt_dir)).steps())
  for root, _, files in os.walk(ckpt_dir / str(latest) / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  os.remove(copy / "summary.json")
  again = run_mock(config, copy)
  # The run resumed from the checkpoint before, redid the last epoch and finished identically.
  assert again["pruned_test_accuracy"] == summary["pruned_test_accuracy"]
  a, _ = checkpoint.load_model(str(workdir / "export"))
  b, _ = checkpoint.load_model(str(copy / "export"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _snapshot(folder):
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def test_resuming_with_a_changed_config_is_refused(finished):
  workdir, config, _ = finished
  before = _snapshot(workdir)
  changed = smoke(**{"data.data_dir": config.data.data_dir, "data.prepare": True, "prune.keep_ratio": 0.5})
  with pytest.raises(ConfigError, match="prune.keep_ratio") as e:
    run_mock(changed, workdir)
  assert "\n" not in str(e.value)
  assert _snapshot(workdir) == before
  # A change the README lists as safe is accepted.
  workdir_lib.check_config(smoke(**{"data.data_dir": "/elsewhere", "checkpoint.every_epochs": 3}),
                           str(workdir))


def _strip(metrics):
  return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def test_pretraining_history_survives_a_crash_before_the_first_prune_checkpoint(
    finished, tmp_path, monkeypatch):
  _, reference_config, _ = finished
  config = smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "checkpoint.keep": 2})
  work = tmp_path / "run"

  def killed(*args, **kwargs):
    raise RuntimeError("killed")

  # Crash 1: the teacher is saved, the prune phase has no checkpoint yet.
  with monkeypatch.context() as m:
    m.setattr(train, "choose_masks", killed)
    with pytest.raises(RuntimeError, match="killed"):
      run_mock(config, work)
  assert (work / "teacher" / "model.json").exists()
  assert not (work / "checkpoints" / "prune").exists()
  # Crash 2: two prune epochs later, so the next resume rewrites metrics.jsonl from a
  # prune checkpoint.
  with (_killed_in_the_third_prune_epoch(monkeypatch),
        pytest.raises(RuntimeError, match="killed")):
    run_mock(config, work)
  run_mock(config, work)
  metrics = read_metrics(work)
  assert [m["epoch"] for m in metrics if m["phase"] == "pretrain"] == [1, 2]  # each once
  assert _strip(metrics) == _strip(read_metrics(finished[0]))  # as if never interrupted


def test_a_workdir_in_use_is_refused_at_once_and_left_untouched(finished, tmp_path):
  workdir, config, summary = finished
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  os.remove(copy / "summary.json")  # an unfinished run: a second one would resume it
  before = _snapshot(copy)
  with workdir_lib.lock(str(copy)):  # what a running `run()` holds
    with pytest.raises(ConfigError) as e:
      run_mock(config, copy)
    assert str(e.value) == (f"workdir {copy} is in use by process {os.getpid()} on "
                            f"{socket.gethostname()}; wait for that run to finish (or stop "
                            "it), or use another --workdir")
    assert _snapshot(copy) == {**before, ".lock": _snapshot(copy)[".lock"]}
  # Released (as when its process ends, however it ends): the same run resumes and finishes.
  assert run_mock(config, copy)["pruned_test_accuracy"] == summary["pruned_test_accuracy"]


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
  config = smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "train.optimizer": "sgd",
                    "train.learning_rate": 1e30})
  with pytest.raises(train.NonFiniteLoss) as e:
    run_mock(config, tmp_path)
  message = str(e.value)
  assert "\n" not in message and "phase prune, stage 0, epoch 1" in message
  ckpt = checkpoint.RunCheckpoints(str(tmp_path / "checkpoints" / "prune"))
  assert ckpt.steps() == [0]
  params = ckpt.restore(0, None)[0]["params"]
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("overrides", [
    {"loss.kind": "regression", "loss.target": "teacher", "loss.reduction": "per_logit"},
    {"loss.kind": "regression", "loss.target": "labels", "loss.reduction": "sum"},
    {"loss.kind": "distillation", "prune.structure": "filter"},
])
def test_other_losses_run_end_to_end(tmp_path, overrides):
  config = smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "train.finetune_epochs": 0,
                    **overrides})
  summary = run_mock(config, tmp_path)
  assert summary["loss"] == overrides["loss.kind"]
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  metrics = read_metrics(tmp_path)
  if overrides.get("loss.reduction") == "per_logit":
    assert len(metrics[-1]["train_per_logit_mse"]) == 10


def test_block_form_and_augmented_cifar(tmp_path):
  """The block form on CIFAR: pad-crop-flip on the device (the same run without it trains
  differently from its first step), the teacher's logits per step, and a frozen teacher
  whose whole units, batch-norm statistics included, end as they began."""
  import reference  # noqa: E402 (configs/ is on the path)
  config = reference.get_config("smoke")
  config.data.update(data_dir=str(tmp_path / "tfds"), prepare=True, name="cifar10", manual_dir="")
  config.blend.form = "block"
  config.loss.kind = "regression"  # teacher logits per step, since CIFAR is augmented
  summary = run_mock(config, tmp_path / "augmented", examples=40)
  assert summary["blend_form"] == "block"
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  config.data.augment = "none"
  run_mock(config, tmp_path / "plain", examples=40)
  augmented, plain = read_metrics(tmp_path / "augmented"), read_metrics(tmp_path / "plain")
  assert len(augmented) == len(plain)
  for phase in ("pretrain", "prune"):  # the same seed and order: only augmentation differs
    first = next(i for i, m in enumerate(plain) if m["phase"] == phase)
    assert augmented[first]["train_loss"] != plain[first]["train_loss"], phase
  # The frozen teacher's units: parameters and batch statistics as pretrained.
  teacher, _ = checkpoint.load_model(str(tmp_path / "augmented" / "teacher"))
  state = _last_prune_state(tmp_path / "augmented")
  for collection, tree_ in (("params", state["params"]["teacher"]),
                            ("batch_stats", state["model_state"]["batch_stats"])):
    flat = tree.flatten(teacher[collection])
    branch = {p.replace("/teacher/", "/", 1): v for p, v in tree.flatten(tree_).items()
              if "/teacher/" in p}
    assert branch and set(branch) == set(flat), collection
    for path, value in branch.items():
      np.testing.assert_array_equal(np.asarray(value), np.asarray(flat[path]), err_msg=path)


# ResNet only: its residual channel groups are the hard case; VGG's compact export has its
# equal-logits test in test_compact.py.
@pytest.mark.parametrize("model", ["resnet"])
def test_filter_structure_exports_a_compact_model(tmp_path, model):
  import reference  # noqa: E402
  config = reference.get_config("smoke")
  config.data.update(data_dir=str(tmp_path / "tfds"), prepare=True, manual_dir="")
  config.prune.structure = "filter"
  config.model.name = model
  config.model.width = 0.125 if model == "vgg" else 0.25
  config.model.depth = 11 if model == "vgg" else 8  # ResNet-8: one block a stage, the same rule
  summary = run_mock(config, tmp_path, examples=40)
  variables, meta = checkpoint.load_model(str(tmp_path / "export"))
  assert meta["compact"] and "smaller" in meta["speedup"]
  total = sum(np.asarray(v).size for v in jax.tree.leaves(variables["params"]))
  assert summary["params_total_after"] == total < summary["params_total_before"]
  kernels = sum(np.asarray(v).size for p, v in jax.tree_util.tree_flatten_with_path(
      variables["params"])[0] if "kernel" in jax.tree_util.keystr(p))
  assert kernels == summary["kept_prunable_params"]
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]


def _cli(workdir, env, *extra):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={os.path.join(REPO, 'configs', 'fashion_mnist.py')}:smoke",
       f"--workdir={workdir}", f"--config.data.data_dir={workdir}_tfds", "--config.data.prepare=True",
       "--config.data.manual_dir=", "--config.model.name=tests/user_models.py:LinenNet",
       "--config.teacher.epochs=3", "--config.train.max_epochs_per_stage=4",
       "--config.train.finetune_epochs=2", *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_and_resume_is_bit_identical(tmp_path):
  """On a user's Linen model with batch norm and dropout (both must resume exactly too).
  Also: the lock file the killed run leaves behind does not block its resume."""
  env = {**os.environ, "MOCK_EXAMPLES": "2000", "TF_CPP_MIN_LOG_LEVEL": "3"}
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  ref = _cli(whole, env)
  victim = _cli(killed, env)
  metrics = killed / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and victim.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
      break
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
  assert (killed / ".lock").exists()  # left behind by the killed run
  out, _ = _cli(killed, env).communicate(timeout=300)
  assert "resumed prune at stage" in out, out[-2000:]
  ref_out, _ = ref.communicate(timeout=300)
  assert ref.returncode == 0, ref_out[-2000:]
  a, _ = checkpoint.load_model(str(whole / "export"))
  b, _ = checkpoint.load_model(str(killed / "export"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]
  assert strip(read_metrics(whole)) == strip(read_metrics(killed))


def test_bfloat16_smoke_run_is_within_a_point_of_float32_and_resumes_bit_identically(
    real_fashion_mnist, tmp_path, monkeypatch):
  """Mixed precision on real Fashion-MNIST: the smoke run in bfloat16 ends within about a
  point of the float32 one, and a bfloat16 run that crashes mid-prune resumes to the same
  model bit for bit (the checkpoint holds float32 state; nothing of bfloat16 is saved)."""
  def config(dtype):
    c = fashion_mnist.get_config("smoke")
    c.data.data_dir = real_fashion_mnist
    c.train.compute_dtype = dtype
    return c

  full = train.run(config("float32"), str(tmp_path / "f32"))
  half = train.run(config("bfloat16"), str(tmp_path / "bf16"))
  assert half["pruned_test_accuracy"] > 0.8  # it learned: chance is 0.1
  assert abs(half["pruned_test_accuracy"] - full["pruned_test_accuracy"]) < 0.015
  assert half["pruned_test_accuracy"] != full["pruned_test_accuracy"]  # bfloat16 really ran
  with (_killed_in_the_third_prune_epoch(monkeypatch),
        pytest.raises(RuntimeError, match="killed")):
    train.run(config("bfloat16"), str(tmp_path / "resumed"))
  train.run(config("bfloat16"), str(tmp_path / "resumed"))
  a, _ = checkpoint.load_model(str(tmp_path / "bf16" / "export"))
  b, _ = checkpoint.load_model(str(tmp_path / "resumed" / "export"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert _strip(read_metrics(tmp_path / "bf16")) == _strip(read_metrics(tmp_path / "resumed"))
