"""Filter masks export a genuinely smaller model with the masked model's logits."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphaprune import checkpoint, compact, masks as masks_lib, models, tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    ({"name": "mlp", "hidden": (40, 24)}, (28, 28, 1)),
    ({"name": "lenet5"}, (28, 28, 1)),
    ({"name": "cnn", "channels": (8, 12), "fc": (16,)}, (28, 28, 1)),
    ({"name": "vgg", "depth": 11, "width": 0.125}, (32, 32, 3)),
    ({"name": "resnet", "depth": 20, "width": 0.5}, (32, 32, 3)),
    ({"name": "imagenet_resnet", "depth": 18, "width": 0.125}, (32, 32, 3)),
    ({"name": "imagenet_resnet", "depth": 50, "width": 0.125}, (32, 32, 3)),
]


def _masked_model(config, shape, keep=0.35):
  model = models.make_model(config, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1,) + shape))
  # Non-trivial normalisation statistics, as after training.
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: (np.abs(rng.normal(1, 0.3, v.shape)).astype(v.dtype)
                    if jax.tree_util.keystr(p).endswith("['var']") else
                    rng.normal(0, 0.3, v.shape).astype(v.dtype)
                    if "mean" in jax.tree_util.keystr(p) or "bias" in jax.tree_util.keystr(p)
                    else np.asarray(v)), variables)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=keep, structure="filter",
                                  groups=model.channel_groups())
  flat_masks = tree.flatten(masks)
  params = tree.unflatten({p: v * flat_masks[p] if p in flat_masks else v
                           for p, v in tree.flatten(variables["params"]).items()})
  return model, {**variables, "params": params}, masks


@pytest.mark.parametrize("config,shape", CASES, ids=[f"{c[0]['name']}{c[0].get('depth', '')}" for c in CASES])
def test_compact_model_equals_masked_model(config, shape):
  model, variables, masks = _masked_model(config, shape)
  fields, small = compact.compact_variables(model, variables, masks)
  small_model = models.make_model({**config, **fields}, 10)
  x = jax.random.normal(jax.random.key(2), (4,) + shape)
  np.testing.assert_allclose(small_model.apply(small, x), model.apply(variables, x),
                             atol=1e-5, rtol=1e-5)
  # Its kernels hold exactly the kept weights, and it is smaller overall.
  kernels = [v for p, v in tree.flatten(small["params"]).items() if p.endswith("kernel")]
  kept = sum(int(np.sum(m)) for m in tree.flatten(masks).values())
  assert sum(k.size for k in kernels) == kept
  assert tree.count(small["params"]) < tree.count(variables["params"])
  # The keep ratio, counted in parameters, is met within one channel per group.
  prunable = sum(m.size for m in tree.flatten(masks).values())
  flat = tree.flatten(variables["params"])
  slack = sum(int(np.prod(flat[prods[0]].shape[:-1])) * len(prods) +
              sum(int(np.prod(flat[c].shape)) // flat[c].shape[-2] for c in cons)
              for prods, cons in model.channel_groups())
  assert abs(kept - 0.35 * prunable) <= slack


def test_resnet_groups_keep_residual_channels_consistent():
  model, variables, masks = _masked_model({"name": "resnet", "depth": 20, "width": 0.5},
                                          (32, 32, 3))
  flat = tree.flatten(masks)
  out = lambda p: flat[p].reshape(-1, flat[p].shape[-1]).any(0)
  stream1 = out("stem/conv/kernel")
  for b in (1, 2, 3):
    np.testing.assert_array_equal(out(f"s1b{b}_conv2/conv/kernel"), stream1)
  assert 0 < stream1.sum() < stream1.size


def test_compact_export_loads_in_a_fresh_process_with_only_models_and_orbax(tmp_path):
  config, shape = CASES[2]
  model, variables, masks = _masked_model(config, shape)
  fields, small = compact.compact_variables(model, variables, masks)
  checkpoint.save_model(str(tmp_path / "export"), small, {"model": {**config, **fields}})
  x = np.asarray(jax.random.normal(jax.random.key(3), (2,) + shape))
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "want.npy", np.asarray(model.apply(variables, x)))
  script = f"""
import json, sys
import numpy as np, orbax.checkpoint as ocp
from alphaprune.models import make_model
meta = json.load(open({str(tmp_path / 'export' / 'model.json')!r}))
variables = ocp.StandardCheckpointer().restore({str(tmp_path / 'export' / 'variables')!r})
model = make_model(meta["model"], 10)
got = model.apply(variables, np.load({str(tmp_path / 'x.npy')!r}))
np.testing.assert_allclose(got, np.load({str(tmp_path / 'want.npy')!r}), atol=1e-5, rtol=1e-5)
assert not any(m in sys.modules for m in ("alphaprune.train", "alphaprune.data",
                                           "tensorflow_datasets")), "training code imported"
print("ok")
"""
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.parametrize("structure", ["heads", "neurons"])
def test_a_transformer_without_its_pruned_heads_or_neurons_gives_the_masked_logits(structure):
  """The ViT masked by whole heads (a head's query, key and value columns and its output
  rows) or MLP units (a unit's column and row) computes what the smaller ViT cut out of it
  computes, with nonzero biases (a masked head still has them)."""
  config = {"name": "vit", "depth": 2, "kwargs": {"dim": 16, "num_heads": 4, "mlp_ratio": 2.0}}
  model = models.make_model(config, 10)
  x = jax.random.normal(jax.random.key(2), (3, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  rng = np.random.default_rng(1)
  variables = {"params": jax.tree.map(lambda v: np.asarray(v) + rng.normal(0, 0.1, v.shape)
                                      .astype(np.float32), variables["params"])}
  units = model.unit_groups(structure)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.5, structure=structure,
                                  units=units)
  flat_masks = tree.flatten(masks)
  assert set(flat_masks) == {path for group in units for path, _ in group}
  params = tree.unflatten({p: v * flat_masks[p] if p in flat_masks else v
                           for p, v in tree.flatten(variables["params"]).items()})
  fields, small = compact.compact_units(model, {"params": params}, masks, structure)
  assert fields == ({"heads": [2, 2], "mlp_dims": [32, 32]} if structure == "heads"
                    else {"heads": [4, 4], "mlp_dims": [16, 16]})
  smaller = models.make_model({**config, **fields}, 10)
  np.testing.assert_allclose(smaller.apply(small, x), model.apply({"params": params}, x),
                             atol=1e-5, rtol=1e-5)
  kept = sum(int(np.sum(m)) for m in flat_masks.values())
  assert kept == sum(np.asarray(tree.flatten(small["params"])[p]).size for p in flat_masks)
