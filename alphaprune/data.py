"""Datasets: the one module that touches TFDS, and on-device batching.

`load()` returns numpy arrays (uint8 NHWC images, int32 labels) for train /
validation / test. The validation split is a seeded fraction held out of the
training split; the test split is for the final evaluation only.

Offline, Fashion-MNIST is built as a real TFDS dataset from a folder of IDX
files (by default Debian's `dataset-fashion-mnist`). TFDS's own builder would
reject those files (their gzip bytes differ from upstream), so we decode them
and store the arrays with `tfds.dataset_builders.store_as_tfds_dataset`.

Batches never leave the device: each epoch's order is a permutation drawn
from (seed, epoch) inside jit, and CIFAR augmentation (pad-4 crop, flip) runs
there too.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
LOCAL_NAME, LOCAL_VERSION = "fashion_mnist_idx", "1.0.0"

# Per-dataset (mean, std) of pixel values in [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
AUGMENTED = ("cifar10", "cifar100")


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


def build_local_fashion_mnist(idx_folder: str, data_dir: str):
  """Stores the IDX folder as a TFDS dataset under `data_dir` and returns its builder."""
  import tensorflow_datasets as tfds

  splits = read_idx_folder(idx_folder)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(28, 28, 1)),
      "label": tfds.features.ClassLabel(num_classes=10),
  })
  return tfds.dataset_builders.store_as_tfds_dataset(
      name=LOCAL_NAME, version=LOCAL_VERSION, features=features,
      split_datasets={split: _keyed_examples(arrays) for split, arrays in splits.items()},
      data_dir=data_dir,
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
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # unknown name
    raise DataError(f"unknown TFDS dataset {name!r} ({type(e).__name__}); "
                    "set --config.data.name to a TFDS image-classification dataset") from e
  try:
    if not download and not builder.is_prepared():
      raise FileNotFoundError("not prepared and data.download=False")
    builder.download_and_prepare()
  except Exception as e:
    hint = ("install Debian's package (apt-get install dataset-fashion-mnist) or set "
            "--config.data.manual_dir to a folder of its IDX files"
            if name == "fashion_mnist" else
            f"prepare it where TFDS can download (tfds build {name}) and point "
            "--config.data.data_dir at that folder")
    raise DataError(f"no data for {name!r} in {data_dir} and it cannot be downloaded "
                    f"({type(e).__name__}): {hint}") from e
  return builder


def _as_arrays(builder, split: str) -> dict[str, np.ndarray]:
  import tensorflow_datasets as tfds

  # Fixed-size batches: TF 2.21 aborts on batch_size=-1 (one element) for generated data.
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=4096, shuffle_files=False)))
  data = {k: np.concatenate([c[k] for c in chunks]) for k in ("image", "label")}
  image = data["image"]
  if image.ndim == 3:
    image = image[..., None]
  return {"image": image.astype(np.uint8), "label": np.asarray(data["label"], np.int32)}


def split_validation(train: dict[str, np.ndarray], fraction: float, seed: int):
  """Seeded (train, val) partition of the training split."""
  n = len(train["label"])
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(fraction * n))
  val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
  return ({k: v[train_idx] for k, v in train.items()},
          {k: v[val_idx] for k, v in train.items()})


def load(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
         val_fraction: float = 0.1, seed: int = 0, download: bool = True,
         max_examples: int = 0) -> Dataset:
  """Train / validation / test arrays of a TFDS dataset; `max_examples` > 0 keeps only the
  first that many of each split (after the validation split is drawn), for quick runs."""
  builder = _builder(name, data_dir, manual_dir, download)
  train = _as_arrays(builder, "train")
  test = _as_arrays(builder, "test")
  num_classes = builder.info.features["label"].num_classes
  if name in NORMALISATION:
    mean, std = NORMALISATION[name]
  else:  # any other TFDS dataset: statistics of its training split
    pixels = train["image"].reshape(-1, train["image"].shape[-1]) / 255.0
    mean, std = tuple(pixels.mean(0).tolist()), tuple((pixels.std(0) + 1e-8).tolist())
  train, val = split_validation(train, val_fraction, seed)
  if max_examples:
    train, val, test = ({k: v[:max_examples] for k, v in split.items()}
                        for split in (train, val, test))
  return Dataset(train, val, test, num_classes, tuple(mean), tuple(std), name in AUGMENTED)


# ---------------------------------------------------------------- on device

def normalise(images_u8, mean, std):
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def epoch_key(seed: int, epoch, stream: int = 0) -> jax.Array:
  """The key for the data order of one epoch: (seed, stream, epoch) alone."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), epoch)


def epoch_order(seed: int, epoch, n: int, stream: int = 0) -> jax.Array:
  """The epoch's data order; `stream` separates phases (pretraining, pruning)."""
  return jax.random.permutation(epoch_key(seed, epoch, stream), n)


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
