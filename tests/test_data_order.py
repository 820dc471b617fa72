"""data.order: an epoch's order from (seed, phase, epoch) alone, equal to JAX's permutation."""

import jax
import numpy as np
import pytest

from alphaprune.data import order


def test_epoch_order_depends_on_seed_and_epoch_only():
  first = np.asarray(order.epoch_order(0, 3, 500))
  np.testing.assert_array_equal(first, order.epoch_order(0, 3, 500))
  assert not np.array_equal(first, order.epoch_order(0, 4, 500))
  assert not np.array_equal(first, order.epoch_order(1, 3, 500))
  assert not np.array_equal(first, order.epoch_order(0, 3, 500, salt=2))
  assert sorted(first) == list(range(500))


@pytest.mark.parametrize("n", [0, 1, 2, 255, 54_000])  # no sort, 1 sort, 2 sorts
def test_epoch_order_is_jax_permutation(n):
  """The host's order is exactly what `jax.random.permutation` gives on any device, so
  runs from before it moved to the host keep their batches."""
  for seed, epoch, salt in ((0, 0, 0), (3, 5, 1), (2**32 + 5, 2, 0)):  # any Python seed
    expected = jax.random.permutation(order.epoch_key(seed, epoch, salt), n)
    got = order.epoch_order(seed, epoch, n, salt)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
