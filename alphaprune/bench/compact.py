"""The compact export's speed: dense ÷ compact forward time of a filter-pruned model."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alphaprune import compact as compact_lib, masks as masks_lib, models, tree
from alphaprune.bench.timing import interleaved


def compact_speedups(model_cfg, shape, repeats, batches=(1, 32, 256), iters=20,
                     structure: str = "filter", keep_ratio: float = 0.35) -> dict:
  """Dense ÷ compact forward time (eval mode) of a model pruned to `keep_ratio` of its
  prunable weights by whole filters (or, for the ViT, attention `heads` or MLP `neurons`),
  per batch size."""
  dense = models.make_model(model_cfg, 10)
  variables = dense.init(jax.random.key(0), jnp.zeros((1,) + shape))
  if structure == "filter":
    masks = masks_lib.compute_masks(variables["params"], keep_ratio=keep_ratio, structure="filter",
                                    groups=dense.channel_groups())
    fields, small = compact_lib.compact_variables(dense, variables, masks)
  else:
    masks = masks_lib.compute_masks(variables["params"], keep_ratio=keep_ratio, structure=structure,
                                    units=dense.unit_groups(structure))
    fields, small = compact_lib.compact_units(dense, variables, masks, structure)
  small = jax.device_put(small)  # on the device like the dense model's, not copied per call
  small_model = models.make_model({**model_cfg, **fields}, 10)
  out = {"compact_params": tree.count(small["params"]),
         "dense_params": tree.count(variables["params"]), "compact_fields": fields}
  forward_dense = jax.jit(lambda v, x: dense.apply(v, x))
  forward_small = jax.jit(lambda v, x: small_model.apply(v, x))
  for batch in batches:
    x = jax.random.normal(jax.random.key(batch), (batch,) + shape)

    def loop(fn, v):
      def go():
        for _ in range(iters):
          y = fn(v, x)
        return y
      return go
    seconds = interleaved({"dense": loop(forward_dense, variables),
                           "compact": loop(forward_small, small)}, repeats)
    out[f"compact_speedup_b{batch}"] = seconds["dense"] / seconds["compact"]
    out[f"dense_forward_ms_b{batch}"] = 1e3 * seconds["dense"] / iters
  return out
