"""data.prepare: the offline Fashion-MNIST built from IDX files, bad files refused."""

import gzip
import os
import struct

import numpy as np
import pytest

from alphaprune.data import device, prepare


def _write_idx(path, array):
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _tiny_idx_folder(folder, n_train=30, n_test=10):
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    _write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"),
               rng.integers(0, 255, (n, 28, 28)))
    _write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)


def test_offline_build_from_a_tiny_idx_folder(tmp_path):
  folder = tmp_path / "idx"
  _tiny_idx_folder(str(folder))
  ds = device.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(folder),
                 val_fraction=0.1, seed=0)
  assert len(ds.train["label"]) + len(ds.val["label"]) == 30 and len(ds.test["label"]) == 10
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  assert sorted(ds.test["label"]) == list(range(10))
  # It is a real TFDS dataset on disk: a second load reads it without the IDX folder.
  again = device.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=None)
  np.testing.assert_array_equal(again.test["image"], ds.test["image"])


def test_bad_idx_files_are_rejected(tmp_path):
  folder = tmp_path / "idx"
  _tiny_idx_folder(str(folder))
  _write_idx(str(folder / "t10k-labels-idx1-ubyte.gz"), np.full(10, 12))
  with pytest.raises(prepare.DataError, match="labels outside"):
    prepare.read_idx_folder(str(folder))


def test_real_fashion_mnist_build_from_debian_files(real_fashion_mnist):
  ds = device.load("fashion_mnist", data_dir=real_fashion_mnist, manual_dir=None,
                 val_fraction=0.1, seed=0, download=False)
  assert len(ds.train["label"]) + len(ds.val["label"]) == 60000
  assert len(ds.val["label"]) == 6000 and len(ds.test["label"]) == 10000
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  for split in (ds.train, ds.val, ds.test):
    assert split["label"].min() == 0 and split["label"].max() == 9
    assert np.bincount(split["label"]).min() > 0
  # Fashion-MNIST's test set has 1,000 images of each class.
  assert np.bincount(ds.test["label"]).tolist() == [1000] * 10


def test_missing_data_is_a_one_line_data_error(tmp_path):
  with pytest.raises(prepare.DataError) as e:
    device.load("fashion_mnist", data_dir=str(tmp_path), manual_dir=str(tmp_path / "none"),
              download=False)
  assert "\n" not in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)
