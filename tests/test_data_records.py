"""data.records: the fast paths read what TFDS's own decoder reads; rows across shards."""

import numpy as np
import tensorflow_datasets as tfds

from alphaprune.data import prepare, records as records_lib


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
    with prepare.quiet_tensorflow():
      builder = tfds.dataset_builders.store_as_tfds_dataset(
          name=name, version="1.0.0", features=features, data_dir=str(tmp_path),
          split_datasets={"train": prepare.keyed_examples(split)}, file_format="array_record")
    source = builder.as_data_source("train")
    assert records_lib._fast_decoder(source) is not None, name
    rows = [3, 0, 11, 7]
    fast, slow = records_lib.fetch(source, rows), [source[r] for r in rows]
    for f, s in zip(fast, slow, strict=True):
      assert f["label"] == s["label"]
      np.testing.assert_array_equal(f["image"], s["image"])
      assert f["image"].dtype == np.uint8 and f["image"].shape == (9, 7, 3)
    read_images, read_labels = records_lib.read_rows(source, rows)  # cut out by position (raw)
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
  got_images, got_labels = records_lib._same_layout(records, (4, 3, 1))
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  assert got_labels.dtype == np.int32
  two_byte_label = records[:4] + [_example(images[4].tobytes(), 200)]
  assert records_lib._same_layout(two_byte_label, (4, 3, 1)) is None
  assert records_lib._same_layout(records, (4, 3, 2)) is None  # not the image's size
  other_bytes = [_example(images[0].tobytes(), 1, id=b"a"), _example(images[1].tobytes(), 2, id=b"b")]
  assert records_lib._same_layout(other_bytes, (4, 3, 1)) is None
  same_extra = [_example(images[0].tobytes(), 1, id=b"a"), _example(images[1].tobytes(), 2, id=b"a")]
  np.testing.assert_array_equal(records_lib._same_layout(same_extra, (4, 3, 1))[0], images[:2])
  assert records_lib._same_layout([b"\x0a\x05garbage"], (4, 3, 1)) is None


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
  records = records_lib._Records(tuple(files), (1, 0, 2), np.cumsum([4, 3, 2]))
  got = records.read([8, 0, 4, 3, 7, 5])
  assert got == [b"2:3", b"0:1", b"1:0", b"0:4", b"2:2", b"1:1"]
