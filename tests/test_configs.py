"""Every config file's `smoke` variant runs from the command line as a user would: on data
that are on this machine (the offline Fashion-MNIST), in seconds, with nothing overridden
but where the dataset is cached."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_smoke_variant_names_data_that_are_here(path):
  c = _load(path).get_config("smoke")
  assert c.data.name == "fashion_mnist" and c.data.manual_dir, path
  assert c.report.enabled is False


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_smoke_variant_runs_from_the_command_line(path, real_fashion_mnist, tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "alphaprune.main", f"--config={path}:smoke", f"--workdir={workdir}",
       f"--config.data.data_dir={real_fashion_mnist}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "done: teacher test accuracy" in proc.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["dataset"] == "fashion_mnist" and summary["train_epoch_compilations"] == 1
  assert summary["teacher_test_accuracy"] > 0.5  # real data: far above chance (0.1)
  assert summary["wall_seconds"] < 120


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
