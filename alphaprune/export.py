"""The pruned network alone, saved as a standalone model (`workdir/export/`).

The teacher is dropped; what remains is an ordinary network of the same
family. With `filter` masks on a built-in model (which declares its channel
groups), or `heads` / `neurons` masks on the built-in ViT, the pruned channels, heads or
hidden units are cut out and the export is genuinely smaller;
otherwise the pruned weights are zeros inside dense kernels, and `model.json`
says so.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import blending, checkpoint, compact, masks as masks_lib, models, tree

COMPACT = ("a smaller dense network: pruned channels are cut out (see compact_speedup_* "
           "in python -m alphaprune.bench)")
DENSE = ("none: the pruned weights are zeros inside dense kernels; the export has the "
         "teacher's shapes and runs exactly as fast")


class Export(NamedTuple):
  model: Any  # the Flax model the variables belong to
  variables: Any  # host arrays
  meta: dict  # what model.json holds


def abstract_variables(model, image_shape) -> Any:
  """Zeros shaped like `model`'s variables: a restore target."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(image_shape)))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _coupled(groups, layer_masks) -> bool:
  """Every kernel the channel groups name is pruned (so cutting channels out is exact)."""
  flat = tree.flatten(layer_masks)
  return groups is not None and all(p in flat for prods, cons in groups
                                     for p in (*prods, *cons))


def pruned_network(plain, model_cfg: dict, num_classes: int, variables, layer_masks,
                   structure: str) -> tuple[Any, dict, Any, bool]:
  """(model, its config, its variables, compact?) of the pruned network."""
  if structure in models.UNIT_STRUCTURES:  # heads, neurons: fewer heads, narrower MLPs
    fields, small = compact.compact_units(plain, variables, layer_masks, structure)
    model_cfg = {**model_cfg, **fields}
    return models.make_model(model_cfg, num_classes), model_cfg, small, True
  groups = plain.channel_groups() if structure == "filter" else None
  if structure == "filter" and _coupled(groups, layer_masks):
    fields, small = compact.compact_variables(plain, variables, layer_masks)
    model_cfg = {**model_cfg, **fields}
    return models.make_model(model_cfg, num_classes), model_cfg, small, True
  return plain, model_cfg, variables, False


def export(path: str, form: str, state, layer_masks, plain, model_cfg: dict, dataset,
           teacher_params, structure: str) -> Export:
  """Saves the pruned network of `state` (teacher dropped) to `path`; returns what was saved."""
  variables = jax.device_get(blending.export_variables(form, state.params, state.model_state,
                                                       state.masks))
  model, model_cfg, variables, is_compact = pruned_network(
      plain, model_cfg, dataset.num_classes, variables, layer_masks, structure)
  counts = masks_lib.param_counts(teacher_params, layer_masks)
  if is_compact:
    counts["params_total_after"] = tree.count(variables["params"])
  meta = {"model": model_cfg, "num_classes": dataset.num_classes,
          "image_shape": list(dataset.image_shape), "mean": list(dataset.mean),
          "std": list(dataset.std), "structure": structure, **counts, "compact": is_compact,
          "sparsity_per_layer": masks_lib.sparsity_per_layer(layer_masks),
          "speedup": COMPACT if is_compact else DENSE}
  checkpoint.save_model(path, variables, meta)
  return Export(model, variables, meta)


def load(path: str, model, image_shape) -> tuple[Any, dict]:
  """(variables, model.json) of a saved model, restored onto `model`'s shapes."""
  return checkpoint.load_model(path, abstract_variables(model, image_shape))
