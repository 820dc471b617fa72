"""Reading examples by row from a prepared TFDS dataset, without TensorFlow.

TFDS's ArrayRecord data source decodes with NumPy alone, but generically (every feature,
one record at a time). For the image and label this package reads, records are read
straight from the split's ArrayRecord shards (one reader per file and process), and:

* a batch of records laid out alike (raw pixels of one size, labels under 128:
  Fashion-MNIST, CIFAR) is cut by position, all at once, after walking the first record's
  protobuf and checking every other byte matches it;
* anything else is decoded one record at a time, parsing the proto once;
* sources that are not ArrayRecord (TFDS's mock data in the tests, synthetic sources) are
  read through their own `__getitems__`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import numpy as np


def images_and_labels(examples) -> tuple[list[np.ndarray], np.ndarray]:
  """Decoded examples → (uint8 HWC images, a list: their sizes may differ; int32 labels)."""
  images = [np.asarray(example["image"], np.uint8) for example in examples]
  images = [image[..., None] if image.ndim == 2 else image for image in images]
  return images, np.asarray([example["label"] for example in examples], np.int32).reshape(-1)


def read_rows(data_source, rows) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
  """(uint8 HWC images, int32 labels) of `rows` of a TFDS data source, read in one call:
  the images as one array where the records share one layout (see `_same_layout`), else
  as a list (their sizes may differ)."""
  rows = [int(r) for r in rows]
  decode = _fast_decoder(data_source)
  if decode is None or not rows:
    return images_and_labels(fetch(data_source, rows))
  records = _records(data_source).read(rows)
  if decode.raw_shape is not None:
    batch = _same_layout(records, decode.raw_shape)
    if batch is not None:
      return batch
  return images_and_labels([decode(record) for record in records])


def fetch(data_source, rows) -> list[dict]:
  """{"image", "label"} of the examples at `rows` of a TFDS data source, read in one call."""
  rows = [int(r) for r in rows]
  decode = _fast_decoder(data_source)
  if decode is not None:
    return [decode(record) for record in _records(data_source).read(rows)]
  try:
    return data_source.__getitems__(rows)
  except TypeError:  # TFDS's mock source (tests) reads one example at a time
    return [data_source[r] for r in rows]


@dataclasses.dataclass(frozen=True)
class _Records:
  """Serialised records of one split by row, read straight from its ArrayRecord shards
  (TFDS's file instructions). ArrayRecord's own `__getitems__` starts a thread pool on every
  call, which costs more CPU than reading 128 small records (4.1 → 3.0 ms a Fashion-MNIST
  batch); the readers here are opened once per process."""

  files: tuple[str, ...]
  starts: tuple[int, ...]  # each shard's first record (its `skip`)
  ends: np.ndarray  # the split's row after each shard's last one

  def read(self, rows: list[int]) -> list[bytes]:
    shard = np.searchsorted(self.ends, rows, side="right")
    out: list[bytes] = [b""] * len(rows)
    for file_index in np.unique(shard):
      where = np.flatnonzero(shard == file_index)
      first = int(self.ends[file_index - 1]) if file_index else 0
      positions = [self.starts[file_index] + rows[i] - first for i in where]
      for i, record in zip(where, _reader(self.files[file_index]).read(positions)):
        out[i] = record
    return out


_RECORDS: dict[int, tuple[Any, _Records]] = {}  # id(data source) → (it, its records)


def _records(data_source) -> _Records:
  """The shards of a TFDS ArrayRecord data source's split (worked out once per source)."""
  if id(data_source) not in _RECORDS:
    instructions = data_source.dataset_info.splits[str(data_source.split)].file_instructions
    _RECORDS[id(data_source)] = (data_source, _Records(
        tuple(os.fspath(part.filename) for part in instructions),
        tuple(int(part.skip) for part in instructions),
        np.cumsum([int(part.take) for part in instructions])))
  return _RECORDS[id(data_source)][1]


def read_records(data_source, rows) -> list[bytes]:
  """The serialised records at `rows` of an ArrayRecord data source, undecoded (the
  bench's floor of the streamed pipeline: what reading alone costs)."""
  return _records(data_source).read([int(r) for r in rows])


_READERS: dict[tuple[int, str], Any] = {}
_READERS_LOCK = threading.Lock()


def _reader(filename: str):
  """One ArrayRecord reader per file and process (Grain's workers open their own), shared
  by the process's reading threads (its reads are thread-safe, as ArrayRecord's own data
  source relies on)."""
  key = (os.getpid(), filename)
  with _READERS_LOCK:
    if key not in _READERS:
      from array_record.python import array_record_module
      _READERS[key] = array_record_module.ArrayRecordReader(
          filename, options="readahead_buffer_size:0", file_reader_buffer_size=32768)
    return _READERS[key]


def _fast_decoder(data_source):
  """A decoder of serialised examples for the image and label this package reads, several
  times faster than TFDS's generic one (which converts every feature): the example proto
  is parsed once, the label read from it, the image taken as raw bytes (a Tensor feature
  stored as bytes), as integers, or decoded by TFDS's own feature (an encoded Image).
  None where it does not apply (TFDS's mock sources, other features): TFDS decodes."""
  features = getattr(getattr(data_source, "dataset_info", None), "features", None)
  if not features:  # not a TFDS source (a synthetic one)
    return None
  from array_record.python import array_record_data_source as array_record
  import tensorflow_datasets as tfds
  if not isinstance(getattr(data_source, "data_source", None),
                    array_record.ArrayRecordDataSource):
    return None
  from tensorflow_datasets.proto import tf_example_pb2

  image, label = features["image"], features["label"]
  if not isinstance(label, tfds.features.ClassLabel):
    return None
  if isinstance(image, tfds.features.Image):
    as_image = image.decode_example_np
  elif (type(image) is tfds.features.Tensor and None not in image.shape
        and np.dtype(image.np_dtype) == np.uint8):
    as_image = lambda value: value.reshape(image.shape)
  else:
    return None

  def decode(record: bytes) -> dict:
    feature = tf_example_pb2.Example.FromString(record).features.feature
    value = feature["image"]
    if value.HasField("bytes_list"):
      raw = value.bytes_list.value[0]
      pixels = raw if isinstance(image, tfds.features.Image) else np.frombuffer(raw, np.uint8)
    else:
      pixels = np.asarray(value.int64_list.value, np.uint8)
    return {"image": as_image(pixels), "label": int(feature["label"].int64_list.value[0])}

  # raw pixels of one shape (stored as bytes, or as integers: `_same_layout` then declines)
  decode.raw_shape = None if isinstance(image, tfds.features.Image) else tuple(image.shape)
  return decode


def _same_layout(records: list[bytes], image_shape) -> tuple[np.ndarray, np.ndarray] | None:
  """Raw images and labels cut out of serialised examples by position, all at once, where
  every record is laid out as the first: the same length, the same bytes outside its image
  and label, and a one-byte label (images of one size stored as raw bytes, labels under
  128: Fashion-MNIST, CIFAR). Protobuf parsing is decided by those other bytes alone, so
  each record parses as the first does. None otherwise (then each is decoded alone).
  A batch of 128 Fashion-MNIST records: 0.8 ms of Python decoding, holding the GIL the
  training loop needs, becomes about 0.05 ms."""
  if len({len(r) for r in records}) != 1:
    return None
  spans = _image_and_label_spans(records[0])
  if spans is None:
    return None
  (i0, i1), (l0, l1) = spans
  if i1 - i0 != int(np.prod(image_shape)) or l1 - l0 != 1:
    return None
  table = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), -1)
  rest = np.ones(table.shape[1], bool)
  rest[i0:i1] = rest[l0] = False
  labels = table[:, l0]
  if (labels >= 0x80).any() or not (table[:, rest] == table[0, rest]).all():
    return None
  return table[:, i0:i1].reshape((-1,) + tuple(image_shape)), labels.astype(np.int32)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = buf[i]
    value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
    if byte < 0x80:
      return value, i


def _fields(buf: bytes, start: int, end: int):
  """(field number, wire type, value start, value end) of each protobuf field in buf[start:end]."""
  i = start
  while i < end:
    key, i = _varint(buf, i)
    wire = key & 7
    if wire == 0:
      j = _varint(buf, i)[1]
    elif wire == 2:
      size, i = _varint(buf, i)
      j = i + size
    elif wire in (1, 5):
      j = i + (8 if wire == 1 else 4)
    else:
      raise ValueError(f"wire type {wire}")
    if j > end:
      raise ValueError("truncated")
    yield key >> 3, wire, i, j
    i = j


def _image_and_label_spans(record: bytes):
  """Where a serialised tf.Example holds its image's bytes (one bytes_list value) and its
  label's varint (one int64_list value): ((start, end), (start, end)), or None."""
  spans = {}
  try:
    for field, wire, start, end in _fields(record, 0, len(record)):
      if (field, wire) != (1, 2):  # Example.features
        continue
      for field, wire, start, end in _fields(record, start, end):
        if (field, wire) != (1, 2):  # Features.feature: one map entry
          continue
        entry = {f: (s, e) for f, w, s, e in _fields(record, start, end) if w == 2}
        if set(entry) != {1, 2}:
          return None
        lists = list(_fields(record, *entry[2]))  # the Feature's one list
        values = list(_fields(record, *lists[0][2:])) if len(lists) == 1 else []
        if len(values) == 1:
          spans[record[slice(*entry[1])].decode()] = (lists[0][0], values[0])
  except (IndexError, ValueError, UnicodeDecodeError):
    return None
  if "image" not in spans or "label" not in spans:
    return None
  (image_list, (_, image_wire, i0, i1)), (label_list, (_, _, l0, l1)) = (spans["image"],
                                                                          spans["label"])
  if (image_list, image_wire, label_list) != (1, 2, 3):  # bytes_list; int64_list
    return None
  return (i0, i1), (l0, l1)

