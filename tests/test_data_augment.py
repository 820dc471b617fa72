"""data.augment: CIFAR's augmentation on the device and the host's, built by hand."""

import jax
import numpy as np

from alphaprune.data import augment


def test_augmentation_is_a_padded_crop_and_a_flip_built_by_hand():
  images = np.asarray(jax.random.randint(jax.random.key(0), (64, 32, 32, 3), 1, 255), np.uint8)
  key = jax.random.key(1)
  got = np.asarray(augment.pad_crop_flip(key, images))
  # The same draws, then the transform by hand: 4 zero pixels around, a 32×32 window at
  # (dy, dx) ∈ [0, 8]², mirrored left-right where the coin says so.
  k_crop, k_flip = jax.random.split(key)
  offsets = np.asarray(jax.random.randint(k_crop, (64, 2), 0, 9))
  flips = np.asarray(jax.random.bernoulli(k_flip, 0.5, (64,)))
  padded = np.zeros((64, 40, 40, 3), np.uint8)
  padded[:, 4:36, 4:36] = images
  for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
    want = padded[i, dy:dy + 32, dx:dx + 32]
    np.testing.assert_array_equal(got[i], want[:, ::-1] if flip else want)
  # Both kinds of draw happen: shifted crops (zero borders) and mirrored images.
  assert {0, 8} <= set(offsets.ravel()) and 0 < flips.sum() < 64
  assert not np.array_equal(got, np.asarray(augment.pad_crop_flip(jax.random.key(2), images)))


def test_host_pad_crop_flip_matches_a_hand_built_crop():
  rng_images = np.random.default_rng(0).integers(0, 255, (6, 5, 7, 3)).astype(np.uint8)
  out = augment.host_augment("pad_crop_flip", rng_images[2:5], 0, np.random.default_rng(9), 6, 2)
  draws = np.random.default_rng(9)
  offsets, flips = draws.integers(0, 9, (6, 2)), draws.random(6) < 0.5
  padded = np.pad(rng_images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(2, 5):
    dy, dx = offsets[i]
    crop = padded[i, dy:dy + 5, dx:dx + 7]
    np.testing.assert_array_equal(out[i - 2], crop[:, ::-1] if flips[i] else crop)


def test_host_augmentation_of_an_example_does_not_depend_on_the_process_reading_it():
  images = [np.random.default_rng(i).integers(0, 255, (20 + i, 30 - i, 3)).astype(np.uint8)
            for i in range(4)]
  for kind in ("pad_crop_flip", "inception_crop_flip"):
    batch = images if kind == "inception_crop_flip" else [i[:16, :16] for i in images]
    whole = augment.host_augment(kind, batch, 16, np.random.default_rng(5), 4, 0)
    halves = [augment.host_augment(kind, batch[lo:lo + 2], 16, np.random.default_rng(5), 4, lo)
              for lo in (0, 2)]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
    assert whole.shape == (4, 16, 16, 3)


def test_inception_crop_and_evaluation_crop_sizes():
  image = np.random.default_rng(0).integers(0, 255, (40, 60, 3)).astype(np.uint8)
  u = np.random.default_rng(1).random((10, 4))
  assert augment.inception_crop(image, 24, u).shape == (24, 24, 3)
  centre = augment.resize_centre_crop(image, 24)
  assert centre.shape == (24, 24, 3)
  # A square image already at size / 0.875 is only centre-cropped.
  square = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
  np.testing.assert_array_equal(augment.resize_centre_crop(square, 28), square[2:30, 2:30])
