"""data.source: TFDS datasets through the real loader, the validation rows, max_examples,
and the synthetic dataset."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alphaprune.data import device, source as source_lib


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mock_data_through_the_real_loader(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=50):
    ds = device.load(name, data_dir=str(tmp_path), val_fraction=0.2, seed=3)
  assert ds.image_shape == shape and ds.num_classes == 10
  assert len(ds.train["label"]) == 40 and len(ds.val["label"]) == 10
  assert ds.train["image"].dtype == np.uint8 and ds.augment == (name == "cifar10")


def test_validation_rows_are_a_seeded_disjoint_part_of_train(tmp_path):
  """The rows `open_source` holds out: a fixed fraction of TFDS's train split, the same for
  a seed, another for another seed, never also training."""
  with tfds.testing.mock_data(num_examples=100):
    a, b, c = (source_lib.open_source("mnist", data_dir=str(tmp_path), val_fraction=0.1,
                                      seed=seed) for seed in (0, 0, 1))
  np.testing.assert_array_equal(a.rows["val"], b.rows["val"])
  assert not np.array_equal(a.rows["val"], c.rows["val"])
  assert len(a.rows["val"]) == 10 and a.stored_split["val"] == a.stored_split["train"]
  assert not set(a.rows["train"]) & set(a.rows["val"])
  assert sorted(np.concatenate([a.rows["train"], a.rows["val"]])) == list(range(100))


def test_max_examples_keeps_the_first_of_every_split(tmp_path):
  with tfds.testing.mock_data(num_examples=50):
    full = device.load("mnist", data_dir=str(tmp_path), val_fraction=0.2, seed=3)
    cut = device.load("mnist", data_dir=str(tmp_path), val_fraction=0.2, seed=3, max_examples=7)
  for a, b in ((full.train, cut.train), (full.val, cut.val), (full.test, cut.test)):
    assert len(b["label"]) == 7
    np.testing.assert_array_equal(b["image"], a["image"][:7])


def test_the_synthetic_dataset_needs_no_files_and_reads_the_same_twice():
  source = source_lib.open_source("synthetic", val_fraction=0.2, seed=0)
  first, again = device.to_memory(source), device.load("synthetic", val_fraction=0.2, seed=0)
  assert first.image_shape == (28, 28, 1) and first.num_classes == 10
  assert len(source.rows["train"]) + len(source.rows["val"]) == 1280
  np.testing.assert_array_equal(first.train["image"], again.train["image"])
  np.testing.assert_array_equal(first.train["label"], source.rows["train"] % 10)
  assert first.train["image"].std() > 50  # random pixels, not a constant
