"""export: the pruned network alone, saved with what model.json promises, loaded back."""

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import blending, export, masks as masks_lib, models, steps, tree
from alphaprune.data.source import Source


def test_the_export_is_the_masked_student_with_its_counts(tmp_path):
  model = models.MLP(hidden=(8,), num_classes=3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.5)
  params, model_state, masks = blending.init_params("layer", jax.random.key(1), variables, masks)
  state = steps.TrainState(step=0, epoch=0, stage=0, stage_epoch=0, cuts=0, alpha=0.0,
                           params=params, model_state=model_state, masks=masks, opt_state=None,
                           rng=None)
  source = Source("x", None, {}, 3, (4, 4, 1), (4, 4, 1), (0.5,), (0.3,), "none")
  saved = export.export(str(tmp_path / "export"), "layer", state, masks, model, {"name": "mlp"},
                        source, variables["params"], "unstructured")
  loaded, meta = export.load(str(tmp_path / "export"), saved.model, (4, 4, 1))
  want = blending.masked_student(params["student"], masks, params["shared"])
  for path, value in tree.flatten(want).items():
    np.testing.assert_array_equal(tree.flatten(loaded["params"])[path], value)
  kept = sum(int(np.sum(m)) for m in tree.flatten(masks).values())
  assert meta["kept_prunable_params"] == kept and meta["compact"] is False
  assert meta["params_total_after"] == tree.count(variables["params"]) - meta["prunable_params"] + kept
  assert meta["sparsity_per_layer"] == {"fc1/dense/kernel": 0.5, "head/dense/kernel": 0.5}
  assert (meta["image_shape"], meta["mean"], meta["num_classes"]) == ([4, 4, 1], [0.5], 3)
