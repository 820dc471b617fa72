"""tree: '/'-joined paths over nested dicts, in the tree's own order."""

import numpy as np
import pytest

from alphaprune import tree

PARAMS = {"b": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}, "a": {"kernel": np.ones(4)}}


def test_flatten_and_unflatten_round_trip_in_order():
  flat = tree.flatten(PARAMS)
  assert list(flat) == ["b/kernel", "b/bias", "a/kernel"]
  assert tree.unflatten(flat).keys() == PARAMS.keys()
  assert tree.flatten({}) == {} and tree.unflatten({}) == {}


def test_subset_without_merge_and_count():
  kernels = tree.subset(PARAMS, ["a/kernel", "b/kernel"])
  assert list(tree.flatten(kernels)) == ["b/kernel", "a/kernel"]  # the tree's order
  rest = tree.without(PARAMS, ["a/kernel", "b/kernel"])
  assert list(tree.flatten(rest)) == ["b/bias"]
  assert set(tree.flatten(tree.merge(kernels, rest))) == set(tree.flatten(PARAMS))
  assert tree.count(PARAMS) == 6 + 3 + 4
  with pytest.raises(ValueError, match="b/bias"):
    tree.merge(rest, PARAMS)
