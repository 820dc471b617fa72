"""Every config file's `smoke` variant runs from the command line as a user would: on data
that are on this machine (the offline Fashion-MNIST), in seconds, with nothing overridden
but where the dataset is cached; the ImageNet recipe's on TFDS mock data of ImageNet."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
ON_MOCK_DATA = {"imagenet.py"}  # datasets no test machine holds: TFDS mock data instead
ON_REAL_DATA = [p for p in CONFIGS if os.path.basename(p) not in ON_MOCK_DATA]


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", ON_REAL_DATA, ids=os.path.basename)
def test_every_smoke_variant_names_data_that_are_here(path):
  c = _load(path).get_config("smoke")
  assert c.data.name == "fashion_mnist" and c.data.manual_dir, path
  assert c.report.enabled is False


@pytest.mark.parametrize("path", ON_REAL_DATA, ids=os.path.basename)
def test_every_smoke_variant_runs_from_the_command_line(path, real_fashion_mnist, tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "alphaprune.main", f"--config={path}:smoke", f"--workdir={workdir}",
       f"--config.data.data_dir={real_fashion_mnist}", "--config.data.prepare=True"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "done: teacher test accuracy" in proc.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["dataset"] == "fashion_mnist" and summary["train_epoch_compilations"] == 1
  assert summary["teacher_test_accuracy"] > 0.5  # real data: far above chance (0.1)


def test_the_imagenet_config_is_the_original_recipe_on_resnet_50():
  from alphaprune import config as config_lib
  c = _load(os.path.join(REPO, "configs", "imagenet.py")).get_config()
  config_lib.validate(c, 8)
  assert (c.model.name, c.model.depth, c.data.pipeline) == ("imagenet_resnet", 50, "stream")
  assert (c.prune.keep_ratio, c.schedule.kind, c.schedule.rate) == (0.35, "exponential", 0.05)
  assert c.sized_for == "accelerator" and c.checkpoint.every_steps > 0


@pytest.mark.parametrize("variant", ["", "quick", "compare", "cnn", "cnn_compare", "smoke"])
def test_every_fashion_mnist_variant_is_valid(variant):
  from alphaprune import config as config_lib
  config_lib.validate(_load(os.path.join(REPO, "configs", "fashion_mnist.py")).get_config(variant))


def test_the_cnn_variant_prunes_every_convolution_and_has_batch_norm():
  import jax
  import jax.numpy as jnp

  from alphaprune import masks, models, tree
  c = _load(os.path.join(REPO, "configs", "fashion_mnist.py")).get_config("cnn")
  model = models.make_model(c.model, 10)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  pruned = masks.compute_masks(params, keep_ratio=c.prune.keep_ratio, include=c.prune.include,
                               exclude=c.prune.exclude)
  convs = {p for p in tree.flatten(params) if p.endswith("conv/kernel")}
  assert len(convs) == 2 and convs <= set(tree.flatten(pruned))
  assert {p for p in tree.flatten(params) if "/bn/" in p}


def test_the_imagenet_smoke_variant_streams_a_resnet_50_on_mock_imagenet(tmp_path):
  """The ImageNet recipe end to end at small size: ResNet-50 (1/16 width) on 32×32 crops of
  TFDS mock imagenet2012 (images of 5–50 pixels a side, 1000 classes), streamed, from a
  given teacher, with a checkpoint every 2 steps."""
  import jax
  import jax.numpy as jnp

  from alphaprune import checkpoint, models
  # A given teacher, as the full config expects (and it spares the suite a compilation).
  c = _load(os.path.join(REPO, "configs", "imagenet.py")).get_config("smoke")
  model = models.make_model(c.model, 1000)
  teacher = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  checkpoint.save_model(str(tmp_path / "teacher"), teacher, {"model": c.model.to_dict()})
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={REPO}/configs/imagenet.py:smoke", f"--workdir={workdir}",
       f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.prepare=True",
       f"--config.teacher.checkpoint={tmp_path / 'teacher'}"],
      cwd=REPO, capture_output=True, text=True, timeout=400,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MOCK_EXAMPLES": "60"})
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "stream pipeline" in proc.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["model"] == "imagenet_resnet" and summary["dataset"] == "imagenet2012"
  assert abs(summary["keep_ratio_measured"] - 0.35) < 0.01
  # 48 training examples in batches of 16: 3-step epochs, 2 stages of 1 epoch. Kept: the
  # stage ends (3, 6) and the latest 3, among them step 4, in the middle of epoch 2.
  steps = sorted(int(p.name) for p in (workdir / "checkpoints" / "prune").iterdir()
                 if p.name.isdigit())
  assert steps == [3, 4, 6], steps
