"""Datasets: the one module that touches TFDS. Reading never imports TensorFlow.

Every split is read by index through TFDS's ArrayRecord data source
(`builder.as_data_source`), which decodes examples with NumPy alone. `open_source()`
finds a prepared dataset and says which rows train, validate and test;
`read()` fetches rows; `load()` reads whole splits into NumPy for the on-device
pipeline (uint8 NHWC images, int32 labels); `stream` feeds larger datasets
batch by batch from the same source. The validation split is a seeded fraction
held out of the training split; the test split is for the final evaluation only.

Preparing a dataset is the one step that may import TensorFlow (TFDS serialises
examples with it), once, with its start-up lines silenced. Offline,
Fashion-MNIST is built as a real TFDS dataset from a folder of IDX files (by
default Debian's `dataset-fashion-mnist`): TFDS's own builder would reject those
files (their gzip bytes differ from upstream), so we decode them and store the
arrays with `tfds.dataset_builders.store_as_tfds_dataset`.

On device, each epoch's order is a permutation drawn from (seed, epoch) inside
jit, and CIFAR augmentation (pad-4 crop, flip) runs there too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import importlib
import os
import struct
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import devices

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# 2.0.0: ArrayRecord files of raw uint8 bytes (1.0.0 held PNG-encoded TFRecords).
LOCAL_NAME, LOCAL_VERSION = "fashion_mnist_idx", "2.0.0"

# Per-dataset (mean, std) of pixel values in [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PAD_CROP_DATASETS = ("cifar10", "cifar100")
# none; pad_crop_flip (CIFAR: 4-pixel pad, random crop, flip); inception_crop_flip
# (ImageNet: random resized crop and flip for training, resize and centre crop to evaluate).
AUGMENTATIONS = ("none", "pad_crop_flip", "inception_crop_flip")
STATS_SAMPLE = 10_000  # training images that estimate (mean, std) for other datasets


class DataError(Exception):
  """Data cannot be found or is malformed (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  train: dict[str, np.ndarray]
  val: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: bool

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train["image"].shape[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A prepared TFDS dataset and the rows of it each split uses.

  `rows[split]` index the TFDS split `tfds_split[split]` (validation rows are
  held out of TFDS's train split). `image_shape` is what the model sees; `None`
  in `stored_shape` marks image sizes that vary from example to example.
  """

  name: str
  builder: Any
  rows: dict[str, np.ndarray]
  num_classes: int
  stored_shape: tuple
  image_shape: tuple[int, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str
  tfds_split: dict[str, str] = dataclasses.field(default_factory=dict)

  @functools.cached_property
  def _sources(self) -> dict:
    return {}

  def data_source(self, split: str):
    """TFDS's random-access source of `split` (opened once, picklable for Grain workers)."""
    name = self.tfds_split[split]
    if name not in self._sources:
      self._sources[name] = self.builder.as_data_source(split=name)
    return self._sources[name]

  def num_examples(self, split: str) -> int:
    return len(self.rows[split])

  def bytes_in_memory(self) -> int:
    """What `load()` would hold: every split's images as uint8."""
    if None in self.stored_shape:
      return -1
    return int(sum(len(r) for r in self.rows.values()) * np.prod(self.image_shape))


# ---------------------------------------------------------------- IDX → TFDS

def read_idx(path: str) -> np.ndarray:
  """Decodes one (optionally gzipped) IDX file."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise DataError(f"{path} is not an IDX file of unsigned bytes")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise DataError(f"{path} is truncated: {array.size} bytes for shape {shape}")
  return array.reshape(shape)


def _find_idx(folder: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    if os.path.exists(os.path.join(folder, name)):
      return os.path.join(folder, name)
  return None


def has_idx_files(folder: str | None) -> bool:
  return bool(folder) and all(_find_idx(folder, s) for pair in IDX_FILES.values()
                              for s in pair)


def read_idx_folder(folder: str) -> dict[str, dict[str, np.ndarray]]:
  """{'train'|'test': {'image': [N,28,28,1] uint8, 'label': [N] int64}}, checked."""
  splits = {}
  for split, (images_stem, labels_stem) in IDX_FILES.items():
    images = read_idx(_find_idx(folder, images_stem))
    labels = read_idx(_find_idx(folder, labels_stem)).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
      raise DataError(f"{folder}: {split} images have shape {images.shape}, expected [N, 28, 28]")
    if len(images) != len(labels):
      raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    if labels.min() < 0 or labels.max() > 9:
      raise DataError(f"{folder}: {split} labels outside 0–9")
    splits[split] = {"image": images[..., None], "label": labels}
  return splits


def _keyed_examples(arrays):
  return ((i, {"image": image, "label": label})
          for i, (image, label) in enumerate(zip(arrays["image"], arrays["label"])))


@contextlib.contextmanager
def quiet_tensorflow():
  """Imports TensorFlow with its start-up lines (absl, oneDNN) kept off our stderr: for
  preparing a dataset, the one step that needs it."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      try:
        importlib.import_module("tensorflow")
      except ImportError as e:
        raise DataError("preparing a TFDS dataset needs TensorFlow, which is not installed; "
                        "install it with pip install -e '.[prepare]' (runs on prepared data "
                        "do not need it)") from e
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)
  yield


def build_local_fashion_mnist(idx_folder: str, data_dir: str):
  """Stores the IDX folder as a TFDS dataset (ArrayRecord) under `data_dir`; returns its builder."""
  import tensorflow_datasets as tfds

  splits = read_idx_folder(idx_folder)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.ClassLabel(num_classes=10),
  })
  with quiet_tensorflow():
    return tfds.dataset_builders.store_as_tfds_dataset(
        name=LOCAL_NAME, version=LOCAL_VERSION, features=features,
        split_datasets={split: _keyed_examples(arrays) for split, arrays in splits.items()},
        data_dir=data_dir, file_format="array_record",
        description=f"Fashion-MNIST decoded from the IDX files in {idx_folder}.")


def _builder(name: str, data_dir: str | None, manual_dir: str | None, download: bool):
  import tensorflow_datasets as tfds

  data_dir = os.path.expanduser(data_dir or "~/tensorflow_datasets")
  if name == "fashion_mnist":
    local = os.path.join(data_dir, LOCAL_NAME, LOCAL_VERSION)
    if os.path.exists(os.path.join(local, "dataset_info.json")):
      return tfds.builder_from_directory(local)
    if has_idx_files(manual_dir):
      build_local_fashion_mnist(manual_dir, data_dir)
      return tfds.builder_from_directory(local)
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # unknown name
    raise DataError(f"unknown TFDS dataset {name!r} ({type(e).__name__}); "
                    "set --config.data.name to a TFDS image-classification dataset") from e
  try:
    if not builder.is_prepared():
      if not download:
        raise FileNotFoundError("not prepared and data.download=False")
      with quiet_tensorflow():
        builder.download_and_prepare()
  except DataError:
    raise
  except Exception as e:
    hint = ("install Debian's package (apt-get install dataset-fashion-mnist) or set "
            "--config.data.manual_dir to a folder of its IDX files"
            if name == "fashion_mnist" else
            f"prepare it where TFDS can download (tfds build {name} --file_format=array_record) "
            "and point --config.data.data_dir at that folder")
    raise DataError(f"no data for {name!r} in {data_dir} and it cannot be downloaded "
                    f"({type(e).__name__}): {hint}") from e
  if "array_record" not in str(builder.info.file_format).lower():
    raise DataError(f"{name} in {data_dir} is stored as {builder.info.file_format}, which "
                    "cannot be read without TensorFlow; rebuild it once with tfds build "
                    f"{name} --file_format=array_record")
  return builder


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded (train, val) partition of the rows of the training split, each sorted."""
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(fraction * n))
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def split_validation(train: dict[str, np.ndarray], fraction: float, seed: int):
  """Seeded (train, val) partition of the training split's arrays."""
  train_idx, val_idx = split_rows(len(train["label"]), fraction, seed)
  return ({k: v[train_idx] for k, v in train.items()},
          {k: v[val_idx] for k, v in train.items()})


def open_source(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                val_fraction: float = 0.1, seed: int = 0, download: bool = True,
                max_examples: int = 0, image_size: int = 0, augment: str = "auto") -> Source:
  """The prepared dataset `name` and its train / validation / test rows; `max_examples` > 0
  keeps only the first that many rows of each split (after the validation split is drawn).

  `image_size` > 0 is the square size the model sees, for datasets whose images vary in
  size; `augment="auto"` picks pad_crop_flip for CIFAR, inception_crop_flip for images of
  varying size, and none otherwise.
  """
  builder = _builder(name, data_dir, manual_dir, download)
  features = builder.info.features
  stored = tuple(features["image"].shape)
  # TFDS's test split, or its validation split where the test labels are not public (ImageNet).
  test_split = "test" if "test" in builder.info.splits else "validation"
  source = Source(name, builder, {}, features["label"].num_classes, stored, (), (), (), "none",
                  {"train": "train", "val": "train", "test": test_split})
  train_rows, val_rows = split_rows(len(source.data_source("train")), val_fraction, seed)
  rows = {"train": train_rows, "val": val_rows,
          "test": np.arange(len(source.data_source("test")))}
  if max_examples:
    rows = {k: v[:max_examples] for k, v in rows.items()}
  if None in stored[:2]:
    if not image_size:
      raise DataError(f"{name}'s images vary in size; set --config.data.image_size to the "
                      "square size the model should see (e.g. 224)")
    shape = (image_size, image_size, stored[-1])
  elif image_size and image_size != stored[0]:
    raise DataError(f"data.image_size={image_size} but {name}'s images are all "
                    f"{stored[0]}×{stored[1]}; leave data.image_size at 0")
  else:
    shape = stored if len(stored) == 3 else stored + (1,)
  if augment == "auto":
    augment = ("pad_crop_flip" if name in PAD_CROP_DATASETS else
               "inception_crop_flip" if None in stored[:2] else "none")
  source = dataclasses.replace(source, rows=rows, image_shape=tuple(shape), augment=augment)
  if name in NORMALISATION:
    mean, std = NORMALISATION[name]
  else:  # any other TFDS dataset: statistics of (a sample of) its training images
    pixels = np.concatenate([
        image.reshape(-1, shape[-1]) for image in
        read(source, "train", rows["train"][:STATS_SAMPLE], resized=True)["image"]]) / 255.0
    mean, std = tuple(pixels.mean(0).tolist()), tuple((pixels.std(0) + 1e-8).tolist())
  return dataclasses.replace(source, mean=tuple(mean), std=tuple(std))


def read(source: Source, split: str, rows, resized: bool = False) -> dict:
  """{"image": uint8 [n, H, W, C], "label": int32 [n]} of `rows` of `split`, decoded by
  TFDS with NumPy. Images of varying size come back as a list unless `resized` (then
  each is resized and centre-cropped to the model's size, as for evaluation)."""
  images, labels = read_rows(source.data_source(split), rows)
  if None in source.stored_shape[:2]:
    if not resized:
      return {"image": images, "label": labels}
    images = [resize_centre_crop(i, source.image_shape[0]) for i in images]
  stacked = (np.stack(images) if len(images) else
             np.zeros((0,) + source.image_shape, np.uint8))
  return {"image": stacked, "label": labels}


def images_and_labels(examples) -> tuple[list[np.ndarray], np.ndarray]:
  """Decoded examples → (uint8 HWC images, a list: their sizes may differ; int32 labels)."""
  images = [np.asarray(e["image"], np.uint8) for e in examples]
  images = [i[..., None] if i.ndim == 2 else i for i in images]
  return images, np.asarray([e["label"] for e in examples], np.int32).reshape(-1)


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
    for f in np.unique(shard):
      where = np.flatnonzero(shard == f)
      first = int(self.ends[f - 1]) if f else 0
      positions = [self.starts[f] + rows[i] - first for i in where]
      for i, record in zip(where, _reader(self.files[f]).read(positions)):
        out[i] = record
    return out


_RECORDS: dict[int, tuple[Any, _Records]] = {}  # id(data source) → (it, its records)


def _records(data_source) -> _Records:
  """The shards of a TFDS ArrayRecord data source's split (worked out once per source)."""
  if id(data_source) not in _RECORDS:
    instructions = data_source.dataset_info.splits[str(data_source.split)].file_instructions
    _RECORDS[id(data_source)] = (data_source, _Records(
        tuple(os.fspath(i.filename) for i in instructions),
        tuple(int(i.skip) for i in instructions),
        np.cumsum([int(i.take) for i in instructions])))
  return _RECORDS[id(data_source)][1]


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
  from array_record.python import array_record_data_source as array_record
  import tensorflow_datasets as tfds
  features = getattr(getattr(data_source, "dataset_info", None), "features", None)
  if (not isinstance(getattr(data_source, "data_source", None),
                     array_record.ArrayRecordDataSource) or not features):
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


def load(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
         val_fraction: float = 0.1, seed: int = 0, download: bool = True,
         max_examples: int = 0) -> Dataset:
  """Train / validation / test arrays of a TFDS dataset of equal-sized images, in memory
  (see `open_source` for the arguments)."""
  return to_memory(open_source(name, data_dir=data_dir, manual_dir=manual_dir,
                               val_fraction=val_fraction, seed=seed, download=download,
                               max_examples=max_examples))


def to_memory(source: Source) -> Dataset:
  """Every split of `source` read into NumPy (for the on-device pipeline)."""
  if None in source.stored_shape[:2] or source.augment == "inception_crop_flip":
    raise DataError(f"{source.name}'s images vary in size and cannot be held on the device; "
                    "use --config.data.pipeline=stream")
  splits = [read(source, split, source.rows[split]) for split in ("train", "val", "test")]
  return Dataset(*splits, source.num_classes, source.mean, source.std,
                 source.augment == "pad_crop_flip")


# ---------------------------------------------------------------- on the host (streamed)

def resize_centre_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """Evaluation view of an image of any size: the shorter side resized to size / 0.875,
  then the central size × size square."""
  h, w = image.shape[:2]
  short = size / crop_fraction
  scale = short / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  resized = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
  from PIL import Image

  if image.shape[:2] == (h, w):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((w, h), Image.BILINEAR), np.uint8)
  return out[..., None] if channels == 1 else out


def inception_crop(image: np.ndarray, size: int, u: np.ndarray) -> np.ndarray:
  """Random resized crop (area 8–100% of the image, aspect ratio 3/4–4/3, the Inception
  recipe) driven by 10 tries of 4 uniform numbers `u` [10, 4] (area, aspect ratio, top,
  left); falls back to the centre square; resized to size × size."""
  h, w = image.shape[:2]
  area = h * w
  for scale_u, ratio_u, top_u, left_u in u:
    target = area * (0.08 + 0.92 * scale_u)
    ratio = np.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * ratio_u)
    cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = int(top_u * (h - ch + 1)), int(left_u * (w - cw + 1))
      return _resize(image[top:top + ch, left:left + cw], size, size)
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return _resize(image[top:top + side, left:left + side], size, size)


def host_augment(kind: str, images, size: int, rng: np.random.Generator, global_batch: int,
                 lo: int) -> np.ndarray:
  """Training augmentation on the host of examples lo:lo+len(images) of a global batch.

  Every random number is drawn from `rng` for the whole global batch and sliced, so an
  example is augmented the same way whichever process reads it.
  """
  n = len(images)
  if kind == "pad_crop_flip":
    offsets = rng.integers(0, 9, (global_batch, 2))[lo:lo + n]
    flips = (rng.random(global_batch) < 0.5)[lo:lo + n]
    images = np.asarray(images)
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.stack([padded[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips, :, ::-1]
    return out
  if kind == "inception_crop_flip":
    u = rng.random((global_batch, 10, 4))[lo:lo + n]
    flips = (rng.random(global_batch) < 0.5)[lo:lo + n]
    out = np.stack([inception_crop(image, size, u_i) for image, u_i in zip(images, u)])
    out[flips] = out[flips, :, ::-1]
    return out
  if kind == "none":
    return np.asarray(images)
  raise ValueError(f"unknown augmentation {kind!r}; use one of {list(AUGMENTATIONS)}")


# ---------------------------------------------------------------- on device

def normalise(images_u8, mean, std):
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def epoch_key(seed: int, epoch, stream: int = 0) -> jax.Array:
  """The key for the data order of one epoch: (seed, stream, epoch) alone."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), epoch)


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int, stream: int = 0) -> np.ndarray:
  """The epoch's data order (int32); `stream` separates phases (pretraining, pruning).

  It is `jax.random.permutation(epoch_key(seed, epoch, stream), n)` (a test checks it
  element for element), computed on the host: the same random sort keys, drawn on the host's
  CPU, sorted by NumPy. XLA's sort on a CPU takes 40 ms for Fashion-MNIST's 54,000 rows, 6%
  of an epoch of LeNet-300-100; this takes about 4 ms, the keys included.
  """
  with jax.default_device(devices.host_device()):
    bits = np.asarray(_sort_keys(seed, epoch, stream, n)).astype(np.uint64)
  order, position = np.arange(n, dtype=np.int32), np.arange(n, dtype=np.uint64)
  for keys in bits:  # one stable sort by 32-bit key per round: ties keep their position
    order = order[(np.sort(keys << np.uint64(32) | position) & np.uint64(0xFFFFFFFF))
                  .astype(np.intp)]
  order.flags.writeable = False  # cached: shared by every caller
  return order


def _shuffle_rounds(n: int) -> int:
  """How many sorts `jax.random.permutation` does for n elements (jax.random._shuffle)."""
  return int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))


@functools.partial(jax.jit, static_argnums=(0, 3))  # a static seed: any Python int
def _sort_keys(seed: int, epoch, stream, n: int) -> jax.Array:
  """Each round's 32-bit sort keys, drawn as `jax.random.permutation` draws them (one
  call, the key included: deriving the key eagerly took 1 ms of three dispatches)."""
  key = epoch_key(seed, epoch, stream)
  rounds = []
  for _ in range(_shuffle_rounds(n)):
    key, sub = jax.random.split(key)
    rounds.append(jax.random.bits(sub, (n,), jnp.uint32))
  return jnp.stack(rounds) if rounds else jnp.zeros((0, n), jnp.uint32)


def augment(key, images_bhwc):
  """Random crop after 4-pixel zero padding, and a random horizontal flip, per image."""
  b, h, w, _ = images_bhwc.shape
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(images_bhwc, ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = jax.random.randint(k_crop, (b, 2), 0, 9)
  flips = jax.random.bernoulli(k_flip, 0.5, (b,))

  def one(img, off, flip):
    crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


def pad_for_eval(arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads to a multiple of `batch_size`, adding a 0/1 `mask` so each example counts once."""
  n = len(arrays["label"])
  pad = -n % batch_size
  out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in arrays.items()}
  out["mask"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  return out
