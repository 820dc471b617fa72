"""Fixed pruning masks, chosen once from the teacher's weights.

Masks are nested dicts of booleans over the prunable kernels only. Which
parameters are prunable is decided by their paths and shapes, never by layer
class, so user models work unchanged: by default every `kernel` of two or more
dimensions (the weights of Flax's Dense, Conv, DenseGeneral and Einsum, Linen and NNX
alike), so that biases of any rank (a ViT's are heads × head dim), embeddings,
position embeddings, class tokens and normalisation stay dense: they are few, and
what a pruned network keeps dense in every method the field compares; or path regexes.
All counting happens on the host (numpy): masks are chosen once per run.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from alphaprune import tree

DEFAULT_INCLUDE = ()  # empty: every `kernel` of at least two dimensions
# wanda: |W|·‖X‖₂ of each input feature over a calibration sample (Sun et al. 2023), compared
# within each output under the layer scope.
CRITERIA = ("magnitude", "random", "wanda")
# How the kept weights are allocated across kernels: the same fraction in every one
# (`layer`), one ranking across all (`global`), Erdős–Rényi-Kernel densities (`erk`, Evci
# et al. 2020) or layer-adaptive magnitude scores ranked globally (`lamp`, Lee et al. 2021).
SCOPES = ("layer", "global", "erk", "lamp")
# heads, neurons: whole attention heads and MLP hidden units (models with unit_groups()).
STRUCTURES = ("unstructured", "filter", "n:m", "heads", "neurons")


def prunable_paths(params: Mapping[str, Any], include: Sequence[str] = DEFAULT_INCLUDE,
                   exclude: Sequence[str] = ()) -> list[str]:
  """Paths (in the tree's order) matching any `include` regex (no regex: every `kernel` of
  at least two dimensions) and no `exclude` regex."""
  inc = [re.compile(p) for p in include]
  exc = [re.compile(p) for p in exclude]
  chosen = (lambda p, v: any(r.search(p) for r in inc)) if inc else (
      lambda p, v: p.rpartition("/")[2] == "kernel" and len(getattr(v, "shape", ())) >= 2)
  return [p for p, v in tree.flatten(params).items()
          if chosen(p, v) and not any(r.search(p) for r in exc)]


def keep_count(keep_ratio: float, size: int) -> int:
  """Weights a layer keeps: round(keep·size), and never none (as tfmot and jaxpruner do)."""
  return min(size, max(1, int(round(keep_ratio * size))))


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
  """Exactly `k` True entries at the largest scores (ties broken by position)."""
  flat = scores.reshape(-1)
  mask = np.zeros(flat.shape, bool)
  if k > 0:
    mask[np.argsort(-flat, kind="stable")[:k]] = True
  return mask.reshape(scores.shape)


def _to_inputs_first(array: np.ndarray, axes) -> tuple[np.ndarray, tuple]:
  """`array` with its contracting `axes` (None: all but the last) moved first and flattened:
  (fan-in, outputs...); and what undoes it."""
  axes = tuple(range(array.ndim - 1)) if axes is None else tuple(axes)
  rest = [a for a in range(array.ndim) if a not in axes]
  moved = np.transpose(array, axes + tuple(rest))
  return moved.reshape((-1,) + moved.shape[len(axes):]), (axes, rest, moved.shape)


def _from_inputs_first(array: np.ndarray, undo) -> np.ndarray:
  axes, rest, shape = undo
  return np.transpose(array.reshape(shape), np.argsort(axes + tuple(rest)))


def _scores(kernels: dict[str, np.ndarray], criterion: str, key, norms=None,
            axes=None) -> dict[str, np.ndarray]:
  if criterion == "magnitude":
    return {p: np.abs(w) for p, w in kernels.items()}
  if criterion == "wanda":
    if norms is None:
      raise ValueError("the wanda criterion needs the input norms of a calibration sample")
    out = {}
    for p, w in kernels.items():
      flat, undo = _to_inputs_first(np.abs(w), (axes or {}).get(p))
      norm = np.asarray(norms[p]).reshape(-1)
      out[p] = _from_inputs_first(flat * norm.reshape((-1,) + (1,) * (flat.ndim - 1)), undo)
    return out
  if criterion == "random":
    if key is None:
      raise ValueError("the random criterion needs a PRNG key")
    return {p: np.asarray(jax.random.uniform(jax.random.fold_in(key, i), w.shape))
            for i, (p, w) in enumerate(kernels.items())}
  raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA}")


def erk_densities(shapes: Mapping[str, tuple], keep_ratio: float) -> dict[str, float]:
  """Erdős–Rényi-Kernel densities (Evci et al. 2020, "Rigging the Lottery"): each kernel's
  kept fraction proportional to sum(shape) / prod(shape) (for a conv, (h + w + in + out) /
  (h·w·in·out)), scaled so the kept weights are `keep_ratio` of all; a kernel whose density
  would pass 1 is kept whole and the rest rescaled (as RigL's own code does)."""
  sizes = {path: int(np.prod(shape)) for path, shape in shapes.items()}
  raw = {path: sum(shape) / sizes[path] for path, shape in shapes.items()}
  target = keep_ratio * sum(sizes.values())
  dense: set[str] = set()
  while True:
    rest = [path for path in shapes if path not in dense]
    budget = target - sum(sizes[path] for path in dense)
    scale = budget / sum(raw[path] * sizes[path] for path in rest) if rest else 0.0
    over = [path for path in rest if scale * raw[path] > 1]
    if not over:
      return {path: 1.0 if path in dense else scale * raw[path] for path in shapes}
    dense.add(max(over, key=lambda path: raw[path]))


def keep_counts(shapes: Mapping[str, tuple], keep_ratio: float, scope: str) -> dict[str, int]:
  """Weights each kernel keeps under an allocation that depends on shapes alone (`layer`,
  `erk`): round(density·size), never none."""
  sizes = {path: int(np.prod(shape)) for path, shape in shapes.items()}
  if scope == "layer":
    return {path: keep_count(keep_ratio, size) for path, size in sizes.items()}
  if scope == "erk":
    densities = erk_densities(shapes, keep_ratio)
    return {path: keep_count(densities[path], size) for path, size in sizes.items()}
  raise ValueError(f"scope {scope!r} ranks weights across kernels; it has no counts per kernel")


def lamp_scores(weights: np.ndarray) -> np.ndarray:
  """Layer-adaptive magnitude scores (Lee et al. 2021): w_u² / Σ_{|w_v| ≥ |w_u|} w_v², each
  weight's squared magnitude over that of itself and every larger weight of its kernel. The
  largest weight of every kernel scores 1, so a global ranking of these scores keeps each
  kernel's best weights first."""
  squared = np.square(np.asarray(weights, np.float64)).reshape(-1)
  order = np.argsort(squared, kind="stable")  # ascending
  suffix = np.cumsum(squared[order][::-1])[::-1]  # Σ of this and every larger weight
  scores = np.empty_like(squared)
  scores[order] = squared[order] / np.maximum(suffix, np.finfo(np.float64).tiny)
  return scores.reshape(np.shape(weights))


def _per_output(scores, keep_ratio, axes):
  """Wanda's comparison group: each output keeps the same fraction of its inputs."""
  out = {}
  for p, score in scores.items():
    flat, undo = _to_inputs_first(score, (axes or {}).get(p))
    columns = flat.reshape(flat.shape[0], -1)
    keep = keep_count(keep_ratio, columns.shape[0])
    order = np.argsort(-columns, axis=0, kind="stable")
    mask = np.zeros(columns.shape, bool)
    np.put_along_axis(mask, order[:keep], True, axis=0)
    out[p] = _from_inputs_first(mask.reshape(flat.shape), undo)
  return out


def _unstructured(scores, kernels, keep_ratio, scope):
  if scope in ("layer", "erk"):
    counts = keep_counts({path: w.shape for path, w in kernels.items()}, keep_ratio, scope)
    return {path: _top_k_mask(score, counts[path]) for path, score in scores.items()}
  if scope == "lamp":
    scores = {path: lamp_scores(kernels[path]) for path in scores}
  sizes = [score.size for score in scores.values()]
  flat = np.concatenate([score.reshape(-1) for score in scores.values()])
  mask = _top_k_mask(flat, int(round(keep_ratio * flat.size)))
  out, start = {}, 0
  for (path, score), size in zip(scores.items(), sizes):
    out[path] = mask[start:start + size].reshape(score.shape)
    if not out[path].any():  # the global ranking emptied this kernel: keep its best weight
      out[path] = _top_k_mask(score, 1)
    start += size
  return out


def _n_m(scores, n, m, axes=None):
  """Keeps the `n` largest of every `m` consecutive entries along the input axis (-2), or
  along a DenseGeneral kernel's contracting axes flattened (`axes`)."""
  out = {}
  for p, s in scores.items():
    if s.ndim < 2:
      raise ValueError(f"n:m masks need kernels with an input axis; {p} has shape {s.shape}")
    if p in (axes or {}):
      flat, undo = _to_inputs_first(s, axes[p])
      out[p] = _from_inputs_first(_n_m({p: flat.reshape(flat.shape[0], -1)}, n, m)[p]
                                  .reshape(flat.shape), undo)
      continue
    moved = np.moveaxis(s, -2, -1)  # (..., out, in)
    size_in = moved.shape[-1]
    pad = -size_in % m
    padded = np.concatenate([moved, np.full(moved.shape[:-1] + (pad,), -np.inf)], -1)
    groups = padded.reshape(padded.shape[:-1] + (-1, m))
    order = np.argsort(-groups, axis=-1, kind="stable")
    ranks = np.argsort(order, axis=-1, kind="stable")
    keep = (ranks < n) & np.isfinite(groups)
    keep = keep.reshape(padded.shape)[..., :size_in]
    out[p] = np.moveaxis(keep, -1, -2)
  return out


def chain_groups(chain: Sequence[str]) -> list[tuple[list[str], list[str]]]:
  """Channel groups of a sequential model: each kernel feeds the next (the last: logits)."""
  return [([a], [b]) for a, b in zip(chain, chain[1:])]


def rounded(count: float, total: int, multiple: int = 1) -> int:
  """round(count), at least one, at most `total`, and a multiple of `multiple` (or `total`
  itself): channel, head and unit counts a device's kernels like (multiples of 8)."""
  if multiple <= 1:
    return min(total, max(1, int(round(count))))
  return min(total, max(multiple, int(round(count / multiple)) * multiple))


def _filter_counts(shapes, groups, fraction, multiple=1):
  """Kept channels per group and the kept parameters, for a uniform kept fraction."""
  kept = [rounded(fraction * shapes[prods[0]][-1], shapes[prods[0]][-1], multiple)
          for prods, _ in groups]
  out_of = {p: i for i, (prods, _) in enumerate(groups) for p in prods}
  in_of = {p: i for i, (_, cons) in enumerate(groups) for p in cons}
  total = 0
  for p, shape in shapes.items():
    per_in = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    size_in, size_out = shape[-2], shape[-1]
    if p in in_of:
      g = in_of[p]
      size_in = size_in // shapes[groups[g][0][0]][-1] * kept[g]
    if p in out_of:
      size_out = kept[out_of[p]]
    total += per_in * size_in * size_out
  return kept, total


def _filter(scores, kernels, keep_ratio, groups, multiple=1):
  """Whole channels by L1 norm, chosen per channel group.

  All producers of a group lose the same output channels (summed L1 norm
  decides), and every consumer loses the matching input channels (tiled when
  a flatten sits between them: NHWC puts the channel fastest). Kernels that
  produce into no group (the logits) keep their outputs. The kept fraction of
  channels, the same for every group, is chosen so that the kept parameters
  are `keep_ratio` of the prunable ones (± one channel per group, or `multiple`).
  """
  shapes = {p: w.shape for p, w in kernels.items()}
  target = keep_ratio * sum(w.size for w in kernels.values())
  lo, hi = 0.0, 1.0
  for _ in range(60):  # bisection on the kept fraction of channels
    mid = (lo + hi) / 2
    if _filter_counts(shapes, groups, mid, multiple)[1] < target:
      lo = mid
    else:
      hi = mid
  kept, _ = min((_filter_counts(shapes, groups, f, multiple) for f in (lo, hi)),
                key=lambda c: abs(c[1] - target))
  channel_masks = []
  for (prods, _), k in zip(groups, kept):
    l1 = sum(scores[p].reshape(-1, scores[p].shape[-1]).sum(0) for p in prods)
    channel_masks.append(_top_k_mask(l1, k))
  masks = {p: np.ones(w.shape, bool) for p, w in kernels.items()}
  for (prods, cons), channels in zip(groups, channel_masks):
    for p in prods:
      masks[p] = masks[p] & channels
    for p in cons:
      w = kernels[p]
      in_mask = np.tile(channels, w.shape[-2] // channels.size)
      masks[p] = masks[p] & in_mask.reshape((1,) * (w.ndim - 2) + (-1, 1))
  return masks


def _units(scores, keep_ratio, unit_groups, multiple=1):
  """Whole units (attention heads, MLP hidden units): in each group every member kernel
  loses the same units along its own unit axis, ranked by the members' summed scores;
  round(keep·units) kept a group (at least one), so the kept parameters are keep_ratio of
  the members' (to a unit)."""
  masks = {}
  for group in unit_groups:
    count = scores[group[0][0]].shape[group[0][1]]
    total = sum(np.moveaxis(scores[path], axis, 0).reshape(count, -1).sum(1)
                for path, axis in group)
    kept = _top_k_mask(total, rounded(keep_ratio * count, count, multiple))
    for path, axis in group:
      shape = [1] * scores[path].ndim
      shape[axis] = count
      masks[path] = np.broadcast_to(kept.reshape(shape), scores[path].shape).copy()
  return masks


def _uncoupled_groups(paths):
  """Without a known topology every kernel is its own group with no consumer (the kernels
  left out, the logits', keep their outputs)."""
  return [([p], []) for p in paths]


def compute_masks(params: Mapping[str, Any], *, keep_ratio: float = 0.35,
                  criterion: str = "magnitude", scope: str = "layer",
                  structure: str = "unstructured", n: int = 2, m: int = 4,
                  include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = (),
                  groups=None, chain: Sequence[str] | None = None, key=None,
                  logits: Sequence[str] = (), axes: Mapping[str, tuple] | None = None,
                  norms: Mapping[str, Any] | None = None, units=None,
                  round_to: int = 1) -> dict[str, Any]:
  """Boolean masks over the prunable kernels of `params` (nested, like params).

  For `filter` structure, `groups` ([(producer paths, consumer paths)], from
  the built-in models' `channel_groups()`) or `chain` (kernels in forward
  order, each feeding the next) say which channels belong together: a pruned
  channel then also disappears from its consumers' inputs, so the masked
  model is exactly the smaller model an export cuts out. Without them (or if
  a kernel they name is not prunable) only output channels are masked, never those of
  the `logits` kernels (the head's output axis is the classes).

  `heads` and `neurons` take `units` (a model's `unit_groups(structure)`) and mask their
  member kernels alone. `axes`: the contracting axes of kernels whose axes are not the
  default (DenseGeneral's, `kernels.contracting_axes`); `norms`: the wanda criterion's input
  norms (`kernels.input_norms`). `round_to`: channels, heads or units kept a group rounded
  to a multiple of it (filter, heads, neurons), for the shapes a device computes fastest.
  """
  paths = prunable_paths(params, include, exclude)
  if units is not None:
    paths = [p for p in paths if any(p == path for group in units for path, _ in group)]
  if not paths:
    raise ValueError(f"no parameter matches prune.include={list(include)} (empty: every "
                     f"kernel of two or more dimensions) and prune.exclude={list(exclude)}")
  flat = tree.flatten(params)
  if groups is None and chain is not None:
    groups = chain_groups(chain)
  named = {p for prods, cons in groups or () for p in (*prods, *cons)}
  if groups is not None and not named <= set(paths):
    groups = None  # a coupled kernel is excluded from pruning: coupling would be wrong
  if scope == "lamp" and criterion != "magnitude":
    raise ValueError(f"scope lamp ranks layer-adaptive magnitude scores; criterion {criterion!r} "
                     "has none (use criterion magnitude, or scope layer, global or erk)")
  kernels = {p: np.asarray(flat[p]) for p in paths}
  scores = _scores(kernels, criterion, key, norms, axes)
  if structure == "unstructured" and criterion == "wanda" and scope == "layer":
    masks = _per_output(scores, keep_ratio, axes)
  elif structure == "unstructured":
    masks = _unstructured(scores, kernels, keep_ratio, scope)
  elif structure == "n:m":
    masks = _n_m(scores, n, m, axes)
  elif structure in ("heads", "neurons"):
    if units is None:
      raise ValueError(f"structure {structure} needs a model that declares its units")
    masks = _units(scores, keep_ratio, units, round_to)
  elif structure == "filter":
    masks = _filter(scores, kernels, keep_ratio,
                    groups or _uncoupled_groups([p for p in paths if p not in logits]), round_to)
  else:
    raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")
  return tree.unflatten({p: np.asarray(masks[p], bool) for p in paths})


def param_counts(params: Mapping[str, Any], masks: Mapping[str, Any]) -> dict[str, int]:
  """Prunable / kept / total parameter counts before and after pruning."""
  prunable = tree.count(masks)
  kept = int(sum(int(np.sum(m)) for m in tree.flatten(masks).values()))
  total = tree.count(params)
  return {"prunable_params": prunable, "kept_prunable_params": kept,
          "params_total_before": total, "params_total_after": total - prunable + kept}


def sparsity_per_layer(masks: Mapping[str, Any]) -> dict[str, float]:
  return {p: float(1.0 - np.mean(m)) for p, m in tree.flatten(masks).items()}
