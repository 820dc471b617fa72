"""data.device: evaluation padding, and the device pipeline's phase input."""

import numpy as np

from alphaprune.data import device


def test_eval_padding_counts_every_example_once():
  arrays = {"image": np.zeros((103, 2, 2, 1), np.uint8), "label": np.arange(103) % 10}
  padded = device.pad_for_eval(arrays, 25)
  assert len(padded["label"]) == 125 and padded["mask"].sum() == 103
  np.testing.assert_array_equal(padded["label"][:103], arrays["label"])
