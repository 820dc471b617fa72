import os

import jax
import jax.numpy as jnp
import pytest

from alphaprune import models, tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("config,shape,classes", [
    ({"name": "mlp"}, (28, 28, 1), 10),
    ({"name": "lenet5"}, (28, 28, 1), 10),
    ({"name": "lenet5"}, (32, 32, 3), 7),
    ({"name": "cnn"}, (28, 28, 1), 10),
    ({"name": "cnn", "channels": (8, 16, 32), "fc": (64, 32)}, (32, 32, 3), 5),
    ({"name": "vgg", "depth": 11, "width": 0.125}, (28, 28, 1), 10),
    ({"name": "vgg", "depth": 16, "width": 0.125}, (32, 32, 3), 100),
    ({"name": "resnet", "depth": 20, "width": 0.25}, (32, 32, 3), 10),
    ({"name": "resnet", "depth": 32, "width": 0.25}, (28, 28, 1), 3),
])
def test_models_take_both_input_sizes_and_any_class_count(config, shape, classes):
  model = models.make_model(config, classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2,) + shape))
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2,) + shape)), shapes)
  assert out.shape == (2, classes)


def test_lenet_300_100_has_the_classic_size():
  model = models.make_model({"name": "mlp"}, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  assert tree.count(params) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_resnet_depth_counts_conv_layers():
  model = models.make_model({"name": "resnet", "depth": 20, "width": 0.25}, 10)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  convs = [p for p in tree.flatten(params) if p.endswith("conv/kernel") and "_proj" not in p]
  assert len(convs) + 1 == 20  # 19 convolutions + the linear head


def test_block_form_has_a_teacher_and_a_student_per_unit():
  model = models.make_model({"name": "vgg", "depth": 11, "width": 0.125}, 10, "block")
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert set(params["conv1"]) == {"teacher", "student"}
  with pytest.raises(ValueError, match="unknown model"):
    models.make_model({"name": "alexnet"}, 10)


def test_imagenet_resnets_have_the_published_sizes():
  """25,557,032 parameters for ResNet-50 and 11,689,512 for ResNet-18 (torchvision's counts)."""
  for depth, count in ((50, 25_557_032), (18, 11_689_512)):
    model = models.make_model({"name": "imagenet_resnet", "depth": depth}, 1000)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert tree.count(variables["params"]) == count
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3))), variables)
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("structure", ["unstructured", "heads", "neurons"])
def test_the_vit_runs_the_smoke_pipeline_from_the_command_line(tmp_path, structure):
  """The built-in ViT through the whole pipeline: unstructured masks export its shapes with
  zeros; heads and neurons export a smaller ViT whose accuracy is the masked model's."""
  import json

  import tensorflow_datasets as tfds
  from cli import run_cli
  workdir = tmp_path / "run"
  argv = ["alphaprune", f"--config={REPO}/configs/fashion_mnist.py:vit_smoke",
          f"--workdir={workdir}", f"--config.data.data_dir={tmp_path}/tfds",
          "--config.data.prepare=True", "--config.data.manual_dir=",
          f"--config.prune.structure={structure}", "--config.teacher.epochs=1"]
  with tfds.testing.mock_data(num_examples=60):
    assert run_cli(argv) == 0
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  meta = json.loads((workdir / "export" / "model.json").read_text())
  assert meta["compact"] == (structure != "unstructured")
  if structure == "heads":
    assert meta["model"]["heads"] == [1, 1]  # of 2 a block, at keep 0.35
  if structure == "neurons":
    assert meta["model"]["mlp_dims"] == [11, 11]  # round(0.35 · 32)
  assert summary["params_total_after"] < summary["params_total_before"]
