"""Finding or preparing a TFDS dataset: the one step that may import TensorFlow.

TFDS serialises examples with TensorFlow, so preparing a dataset imports it once, with its
start-up lines silenced; reading a prepared one never does. Offline, Fashion-MNIST is built
as a real TFDS dataset from a folder of IDX files (by default Debian's
`dataset-fashion-mnist`): TFDS's own builder would reject those files (their gzip bytes
differ from upstream), so we decode them and store the arrays with
`tfds.dataset_builders.store_as_tfds_dataset`, as ArrayRecord.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import os
import struct

import numpy as np

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# 2.0.0: ArrayRecord files of raw uint8 bytes (1.0.0 held PNG-encoded TFRecords).
LOCAL_NAME, LOCAL_VERSION = "fashion_mnist_idx", "2.0.0"


class DataError(Exception):
  """Data cannot be found or is malformed (exit code 2)."""


def read_idx(path: str) -> np.ndarray:
  """Decodes one (optionally gzipped) IDX file."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise DataError(f"{path} is not an IDX file of unsigned bytes")
  shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  array = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise DataError(f"{path} is truncated: {array.size} bytes for shape {shape}")
  return array.reshape(shape)


def _find_idx(folder: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    if os.path.exists(os.path.join(folder, name)):
      return os.path.join(folder, name)
  return None


def has_idx_files(folder: str | None) -> bool:
  return bool(folder) and all(_find_idx(folder, stem) for pair in IDX_FILES.values()
                              for stem in pair)


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


def keyed_examples(arrays):
  """(key, example) pairs of a split's arrays, as `store_as_tfds_dataset` takes them."""
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
        split_datasets={split: keyed_examples(arrays) for split, arrays in splits.items()},
        data_dir=data_dir, file_format="array_record",
        description=f"Fashion-MNIST decoded from the IDX files in {idx_folder}.")


def _local_fashion_mnist(data_dir: str, manual_dir: str | None):
  """The offline Fashion-MNIST's builder, built from `manual_dir` the first time; None if
  neither it nor the IDX files are there."""
  import tensorflow_datasets as tfds

  local = os.path.join(data_dir, LOCAL_NAME, LOCAL_VERSION)
  if os.path.exists(os.path.join(local, "dataset_info.json")):
    return tfds.builder_from_directory(local)
  if has_idx_files(manual_dir):
    build_local_fashion_mnist(manual_dir, data_dir)
    return tfds.builder_from_directory(local)
  return None


def builder(name: str, data_dir: str | None, manual_dir: str | None, download: bool,
            create: bool = True):
  """The TFDS builder of a prepared (ArrayRecord) dataset, preparing it first if it may. A
  given `data_dir` that does not exist is refused unless `create` (TFDS's default folder is
  always created)."""
  import tensorflow_datasets as tfds

  if data_dir and not create and not os.path.isdir(os.path.expanduser(data_dir)):
    raise DataError(f"data.data_dir={data_dir} does not exist; check the path, or set "
                    "--config.data.prepare=True to build the dataset there")
  data_dir = os.path.expanduser(data_dir or "~/tensorflow_datasets")
  if name == "fashion_mnist":
    local = _local_fashion_mnist(data_dir, manual_dir)
    if local is not None:
      return local
  try:
    found = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # unknown name
    raise DataError(f"unknown TFDS dataset {name!r} ({type(e).__name__}); "
                    "set --config.data.name to a TFDS image-classification dataset") from e
  try:
    if not found.is_prepared():
      if not download:
        raise FileNotFoundError("not prepared and data.download=False")
      with quiet_tensorflow():
        found.download_and_prepare()
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
  if "array_record" not in str(found.info.file_format).lower():
    raise DataError(f"{name} in {data_dir} is stored as {found.info.file_format}, which "
                    "cannot be read without TensorFlow; rebuild it once with tfds build "
                    f"{name} --file_format=array_record")
  return found
