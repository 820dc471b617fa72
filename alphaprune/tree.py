"""Path helpers for nested parameter dicts (paths are '/'-joined keys)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from flax import traverse_util


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep="/") if flat else {}


def subset(tree: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
  """The sub-tree holding exactly `paths` (in the tree's own order)."""
  keep = set(paths)
  return unflatten({p: v for p, v in flatten(tree).items() if p in keep})


def without(tree: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
  drop = set(paths)
  return unflatten({p: v for p, v in flatten(tree).items() if p not in drop})


def merge(*trees: Mapping[str, Any]) -> dict[str, Any]:
  """Union of trees with disjoint leaves."""
  flat: dict[str, Any] = {}
  for tree in trees:
    for path, value in flatten(tree).items():
      if path in flat:
        raise ValueError(f"parameter {path!r} is in two of the merged trees")
      flat[path] = value
  return unflatten(flat)


def count(tree: Mapping[str, Any]) -> int:
  return int(sum(v.size for v in flatten(tree).values()))
