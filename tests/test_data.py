"""Data: TFDS loading (mock and real), seeded order, evaluation padding, augmentation."""

import gzip
import os
import struct

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alphaprune import data


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_mock_data_through_the_real_loader(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=50):
    ds = data.load(name, data_dir=str(tmp_path), val_fraction=0.2, seed=3)
  assert ds.image_shape == shape and ds.num_classes == 10
  assert len(ds.train["label"]) == 40 and len(ds.val["label"]) == 10
  assert ds.train["image"].dtype == np.uint8 and ds.augment == (name == "cifar10")


def test_validation_is_a_seeded_disjoint_part_of_train():
  train = {"image": np.arange(100)[:, None], "label": np.arange(100)}
  a_train, a_val = data.split_validation(train, 0.1, seed=0)
  b_train, b_val = data.split_validation(train, 0.1, seed=0)
  c_train, c_val = data.split_validation(train, 0.1, seed=1)
  np.testing.assert_array_equal(a_val["label"], b_val["label"])
  assert not np.array_equal(a_val["label"], c_val["label"])
  assert len(a_val["label"]) == 10
  assert not set(a_train["label"]) & set(a_val["label"])
  assert sorted(np.concatenate([a_train["label"], a_val["label"]])) == list(range(100))


def test_epoch_order_depends_on_seed_and_epoch_only():
  a = np.asarray(data.epoch_order(0, 3, 500))
  np.testing.assert_array_equal(a, data.epoch_order(0, 3, 500))
  assert not np.array_equal(a, data.epoch_order(0, 4, 500))
  assert not np.array_equal(a, data.epoch_order(1, 3, 500))
  assert not np.array_equal(a, data.epoch_order(0, 3, 500, stream=2))
  assert sorted(a) == list(range(500))


@pytest.mark.parametrize("n", [0, 1, 2, 255, 54_000])  # no sort, 1 sort, 2 sorts
def test_epoch_order_is_jax_permutation(n):
  """The host's order is exactly what `jax.random.permutation` gives on any device, so
  runs from before it moved to the host keep their batches."""
  for seed, epoch, stream in ((0, 0, 0), (3, 5, 1), (2**32 + 5, 2, 0)):  # any Python seed
    expected = jax.random.permutation(data.epoch_key(seed, epoch, stream), n)
    got = data.epoch_order(seed, epoch, n, stream)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


def test_eval_padding_counts_every_example_once():
  arrays = {"image": np.zeros((103, 2, 2, 1), np.uint8), "label": np.arange(103) % 10}
  padded = data.pad_for_eval(arrays, 25)
  assert len(padded["label"]) == 125 and padded["mask"].sum() == 103
  np.testing.assert_array_equal(padded["label"][:103], arrays["label"])


def test_augmentation_is_a_padded_crop_and_a_flip_built_by_hand():
  images = np.asarray(jax.random.randint(jax.random.key(0), (64, 32, 32, 3), 1, 255), np.uint8)
  key = jax.random.key(1)
  got = np.asarray(data.augment(key, images))
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
  assert not np.array_equal(got, np.asarray(data.augment(jax.random.key(2), images)))


def test_max_examples_keeps_the_first_of_every_split(tmp_path):
  with tfds.testing.mock_data(num_examples=50):
    full = data.load("mnist", data_dir=str(tmp_path), val_fraction=0.2, seed=3)
    cut = data.load("mnist", data_dir=str(tmp_path), val_fraction=0.2, seed=3, max_examples=7)
  for a, b in ((full.train, cut.train), (full.val, cut.val), (full.test, cut.test)):
    assert len(b["label"]) == 7
    np.testing.assert_array_equal(b["image"], a["image"][:7])


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
  ds = data.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(folder),
                 val_fraction=0.1, seed=0)
  assert len(ds.train["label"]) + len(ds.val["label"]) == 30 and len(ds.test["label"]) == 10
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  assert sorted(ds.test["label"]) == list(range(10))
  # It is a real TFDS dataset on disk: a second load reads it without the IDX folder.
  again = data.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=None)
  np.testing.assert_array_equal(again.test["image"], ds.test["image"])


def test_bad_idx_files_are_rejected(tmp_path):
  folder = tmp_path / "idx"
  _tiny_idx_folder(str(folder))
  _write_idx(str(folder / "t10k-labels-idx1-ubyte.gz"), np.full(10, 12))
  with pytest.raises(data.DataError, match="labels outside"):
    data.read_idx_folder(str(folder))


def test_real_fashion_mnist_build_from_debian_files(real_fashion_mnist):
  ds = data.load("fashion_mnist", data_dir=real_fashion_mnist, manual_dir=None,
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
  with pytest.raises(data.DataError) as e:
    data.load("fashion_mnist", data_dir=str(tmp_path), manual_dir=str(tmp_path / "none"),
              download=False)
  assert "\n" not in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)


def test_fast_decoding_reads_what_tfds_own_decoder_reads(tmp_path):
  """The image and label of PNG images, raw-byte tensors and integer-list tensors, as
  TFDS's generic decoder gives them (the fast path is on for all three)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (12, 9, 7, 3)).astype(np.uint8)
  labels = rng.integers(0, 5, 12)
  kinds = {"fast_png": tfds.features.Image(shape=(9, 7, 3)),
           "fast_raw": tfds.features.Tensor(shape=(9, 7, 3), dtype=np.uint8,
                                            encoding=tfds.features.Encoding.BYTES),
           "fast_ints": tfds.features.Tensor(shape=(9, 7, 3), dtype=np.uint8)}
  for name, image_feature in kinds.items():
    features = tfds.features.FeaturesDict({"image": image_feature,
                                           "label": tfds.features.ClassLabel(num_classes=5)})
    split = {"image": images, "label": labels}
    with data.quiet_tensorflow():
      builder = tfds.dataset_builders.store_as_tfds_dataset(
          name=name, version="1.0.0", features=features, data_dir=str(tmp_path),
          split_datasets={"train": data._keyed_examples(split)}, file_format="array_record")
    source = builder.as_data_source("train")
    assert data._fast_decoder(source) is not None, name
    rows = [3, 0, 11, 7]
    fast, slow = data.fetch(source, rows), [source[r] for r in rows]
    for f, s in zip(fast, slow, strict=True):
      assert f["label"] == s["label"]
      np.testing.assert_array_equal(f["image"], s["image"])
      assert f["image"].dtype == np.uint8 and f["image"].shape == (9, 7, 3)
    read_images, read_labels = data.read_rows(source, rows)  # cut out by position (raw)
    np.testing.assert_array_equal(np.stack(read_images), np.stack([s["image"] for s in slow]))
    np.testing.assert_array_equal(read_labels, [s["label"] for s in slow])
    assert isinstance(read_images, np.ndarray) == (name == "fast_raw")


def _example(image: bytes, label: int, **extra: bytes) -> bytes:
  from tensorflow_datasets.proto import tf_example_pb2
  example = tf_example_pb2.Example()
  example.features.feature["image"].bytes_list.value.append(image)
  example.features.feature["label"].int64_list.value.append(label)
  for key, value in extra.items():
    example.features.feature[key].bytes_list.value.append(value)
  return example.SerializeToString(deterministic=True)


def test_records_laid_out_alike_are_cut_by_position_or_decoded_one_by_one():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 4, 3, 1)).astype(np.uint8)
  labels = [0, 7, 127, 3, 9]
  records = [_example(i.tobytes(), label) for i, label in zip(images, labels)]
  got_images, got_labels = data._same_layout(records, (4, 3, 1))
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  assert got_labels.dtype == np.int32
  two_byte_label = records[:4] + [_example(images[4].tobytes(), 200)]
  assert data._same_layout(two_byte_label, (4, 3, 1)) is None
  assert data._same_layout(records, (4, 3, 2)) is None  # not the image's size
  other_bytes = [_example(images[0].tobytes(), 1, id=b"a"), _example(images[1].tobytes(), 2, id=b"b")]
  assert data._same_layout(other_bytes, (4, 3, 1)) is None
  same_extra = [_example(images[0].tobytes(), 1, id=b"a"), _example(images[1].tobytes(), 2, id=b"a")]
  np.testing.assert_array_equal(data._same_layout(same_extra, (4, 3, 1))[0], images[:2])
  assert data._same_layout([b"\x0a\x05garbage"], (4, 3, 1)) is None


def test_records_read_rows_across_shards(tmp_path):
  """Rows of a split stored in several ArrayRecord shards, each read from its `skip` on,
  come back in the order asked for."""
  from array_record.python import array_record_module
  files = []
  for f, count in enumerate((5, 3, 4)):
    files.append(str(tmp_path / f"shard{f}"))
    writer = array_record_module.ArrayRecordWriter(files[-1], "group_size:1")
    for i in range(count):
      writer.write(f"{f}:{i}".encode())
    writer.close()
  # The split takes records 1–4 of shard 0, all of shard 1 and records 2–3 of shard 2.
  records = data._Records(tuple(files), (1, 0, 2), np.cumsum([4, 3, 2]))
  got = records.read([8, 0, 4, 3, 7, 5])
  assert got == [b"2:3", b"0:1", b"1:0", b"0:4", b"2:2", b"1:1"]
