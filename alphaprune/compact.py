"""Physically smaller models from `filter` masks.

A channel group's pruned channels are cut out of every kernel, bias and
normalisation parameter that produces them and out of the input axis of
every kernel that consumes them. Since the masked model already ignores
those channels, the compact model computes the same logits with fewer
parameters. The built-in models say which channels belong together
(`channel_groups()`) and how to rebuild themselves smaller (`compact_fields()`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from alphaprune import tree


def group_channels(groups, masks: Mapping[str, Any]) -> list[np.ndarray]:
  """The kept channels (bool) of each group, read off its first producer's mask."""
  flat = tree.flatten(masks)
  out = []
  for producers, _ in groups:
    m = np.asarray(flat[producers[0]])
    out.append(m.reshape(-1, m.shape[-1]).any(0))
  return out


def compact_variables(model, variables: Mapping[str, Any], masks: Mapping[str, Any]):
  """(model fields of the smaller model, its variables) from masked `variables`."""
  groups = model.channel_groups()
  channels = group_channels(groups, masks)
  produces = {p.split("/")[0]: c for (prods, _), c in zip(groups, channels) for p in prods}
  consumes = {p: c for (_, cons), c in zip(groups, channels) for p in cons}
  out = {}
  for name, collection in variables.items():
    flat = {}
    for path, value in tree.flatten(collection).items():
      value = np.asarray(value)
      unit = path.split("/")[0]
      if unit in produces:  # every per-output parameter of the unit: kernel, bias, BN
        value = value[..., produces[unit]]
      if path in consumes:
        channels_in = consumes[path]
        rows = np.tile(channels_in, value.shape[-2] // channels_in.size)
        value = np.compress(rows, value, axis=-2)
      flat[path] = value
    out[name] = tree.unflatten(flat)
  return model.compact_fields([int(c.sum()) for c in channels]), out


def compact_units(model, variables: Mapping[str, Any], masks: Mapping[str, Any],
                  structure: str):
  """(model fields of the smaller model, its variables) for `heads` or `neurons` masks: each
  group's pruned units cut out of every member kernel along its unit axis, and out of the
  member's bias where the bias has that axis (a head's query, key and value biases, an MLP
  unit's first bias; not the output projection's)."""
  groups = model.unit_groups(structure)
  flat_masks = tree.flatten(masks)
  cuts, kept = {}, []
  for group in groups:
    first, axis = group[0]
    mask = np.asarray(flat_masks[first])
    units = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(1)
    kept.append(int(units.sum()))
    for path, unit_axis in group:
      cuts[path] = (unit_axis, units)
      bias = path.rpartition("/")[0] + "/bias"
      rank = np.ndim(flat_masks[path])
      cuts[bias] = (unit_axis - 1, units) if unit_axis >= 1 and rank - 1 > unit_axis - 1 else None
  out = {}
  for name, collection in variables.items():
    flat = {}
    for path, value in tree.flatten(collection).items():
      value = np.asarray(value)
      cut = cuts.get(path)
      if cut is not None and cut[0] < value.ndim:
        value = np.compress(cut[1], value, axis=cut[0])
      flat[path] = value
    out[name] = tree.unflatten(flat)
  return model.compact_fields(kept, structure), out
