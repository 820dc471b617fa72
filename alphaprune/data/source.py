"""A dataset's source: which rows of which split train, validate and test, read by index.

`open_source()` finds a prepared TFDS dataset (see `prepare`) and draws the validation
rows, a seeded fraction held out of its training split; the test split is for the final
evaluation only. Every split is read by row through TFDS's ArrayRecord data source, which
decodes with NumPy alone (see `records`). `synthetic` is a small dataset of random images
made in memory, for benchmarks and dry runs on a machine with no dataset prepared.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from alphaprune.data import augment as augment_lib
from alphaprune.data import prepare, records
from alphaprune.data.prepare import DataError

# Per-dataset (mean, std) of pixel values in [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5,), (0.29,)),
}
PAD_CROP_DATASETS = ("cifar10", "cifar100")
STATS_SAMPLE = 10_000  # training images that estimate (mean, std) for other datasets
SYNTHETIC = "synthetic"
SYNTHETIC_SIZES = {"train": 1280, "test": 320}  # 28×28×1 random images, 10 classes


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A prepared dataset and the rows of it each split uses.

  `rows[split]` index the stored split `stored_split[split]` (validation rows are held
  out of the stored train split). `image_shape` is what the model sees; `stored_shape`
  is what the files hold, with `None` where image sizes vary from example to example.
  """

  name: str
  builder: Any  # TFDS's builder (None for the synthetic dataset)
  rows: dict[str, np.ndarray]
  num_classes: int
  stored_shape: tuple
  image_shape: tuple[int, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str
  stored_split: dict[str, str] = dataclasses.field(default_factory=dict)

  @functools.cached_property
  def _opened(self) -> dict:
    return {}

  def data_source(self, split: str):
    """The random-access source of `split` (opened once, picklable for Grain workers)."""
    name = self.stored_split[split]
    if name not in self._opened:
      self._opened[name] = self.builder.as_data_source(split=name)
    return self._opened[name]

  @property
  def varying_size(self) -> bool:
    """Whether image sizes vary from example to example (then they cannot be held on a
    device as one array, and are resized to `image_shape` on the host)."""
    return None in self.stored_shape[:2]

  def num_examples(self, split: str) -> int:
    return len(self.rows[split])

  def bytes_in_memory(self) -> int:
    """What the device pipeline would hold: every split's images as uint8 (-1: they
    cannot be held, their sizes vary)."""
    if self.varying_size:
      return -1
    return int(sum(len(rows) for rows in self.rows.values()) * np.prod(self.image_shape))


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded (train, val) partition of the rows of the training split, each sorted."""
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(fraction * n))
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def open_source(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                val_fraction: float = 0.1, seed: int = 0, download: bool = True,
                max_examples: int = 0, image_size: int = 0, augment: str = "auto",
                create_data_dir: bool = True) -> Source:
  """The prepared dataset `name` and its train / validation / test rows; `max_examples` > 0
  keeps only the first that many rows of each split (after the validation split is drawn).

  `image_size` > 0 is the square size the model sees, for datasets whose images vary in
  size; `augment="auto"` picks pad_crop_flip for CIFAR, inception_crop_flip for images of
  varying size, and none otherwise. `create_data_dir=False` refuses a `data_dir` that does
  not exist (the command line's default: a typo should not build a dataset somewhere new).
  """
  if name == SYNTHETIC:
    builder, stored, num_classes, test_split = _Synthetic(), (28, 28, 1), 10, "test"
  else:
    builder = prepare.builder(name, data_dir, manual_dir, download, create_data_dir)
    features = builder.info.features
    stored, num_classes = tuple(features["image"].shape), features["label"].num_classes
    # TFDS's test split, or its validation split where the test labels are not public.
    test_split = "test" if "test" in builder.info.splits else "validation"
  source = Source(name, builder, {}, num_classes, stored, (), (), (), "none",
                  {"train": "train", "val": "train", "test": test_split})
  train_rows, val_rows = split_rows(len(source.data_source("train")), val_fraction, seed)
  rows = {"train": train_rows, "val": val_rows,
          "test": np.arange(len(source.data_source("test")))}
  if max_examples:
    rows = {split: chosen[:max_examples] for split, chosen in rows.items()}
  if augment == "auto":
    augment = ("pad_crop_flip" if name in PAD_CROP_DATASETS else
               "inception_crop_flip" if source.varying_size else "none")
  source = dataclasses.replace(source, rows=rows, augment=augment,
                               image_shape=_model_shape(name, stored, image_size))
  mean, std = NORMALISATION[name] if name in NORMALISATION else _statistics(source)
  return dataclasses.replace(source, mean=tuple(mean), std=tuple(std))


def _model_shape(name: str, stored: tuple, image_size: int) -> tuple[int, ...]:
  """The (H, W, C) the model sees."""
  if None in stored[:2]:
    if not image_size:
      raise DataError(f"{name}'s images vary in size; set --config.data.image_size to the "
                      "square size the model should see (e.g. 224)")
    return (image_size, image_size, stored[-1])
  if image_size and image_size != stored[0]:
    raise DataError(f"data.image_size={image_size} but {name}'s images are all "
                    f"{stored[0]}×{stored[1]}; leave data.image_size at 0")
  return tuple(stored if len(stored) == 3 else stored + (1,))


def _statistics(source: Source) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel (mean, std) of (a sample of) a dataset's training images, for datasets
  with no published normalisation."""
  channels = source.image_shape[-1]
  sample = read(source, "train", source.rows["train"][:STATS_SAMPLE], resized=True)["image"]
  pixels = np.concatenate([image.reshape(-1, channels) for image in sample]) / 255.0
  return tuple(pixels.mean(0).tolist()), tuple((pixels.std(0) + 1e-8).tolist())


def read(source: Source, split: str, rows, resized: bool = False) -> dict:
  """{"image": uint8 [n, H, W, C], "label": int32 [n]} of `rows` of `split`, decoded with
  NumPy. Images of varying size come back as a list unless `resized` (then each is resized
  and centre-cropped to the model's size, as for evaluation)."""
  images, labels = records.read_rows(source.data_source(split), rows)
  if source.varying_size:
    if not resized:
      return {"image": images, "label": labels}
    images = [augment_lib.resize_centre_crop(image, source.image_shape[0]) for image in images]
  stacked = (np.stack(images) if len(images) else
             np.zeros((0,) + source.image_shape, np.uint8))
  return {"image": stacked, "label": labels}


class _Synthetic:
  """Random 28×28×1 images with labels row mod 10, made from the row alone: a dataset for
  benchmarks and dry runs that needs no files (and so no TensorFlow to prepare them)."""

  def as_data_source(self, split: str) -> "_SyntheticSplit":
    return _SyntheticSplit(split, SYNTHETIC_SIZES[split])


@dataclasses.dataclass(frozen=True)
class _SyntheticSplit:
  split: str
  size: int

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, row: int) -> dict:
    seed = (int(row), 0 if self.split == "train" else 1)
    image = np.random.default_rng(seed).integers(0, 256, (28, 28, 1), np.uint8)
    return {"image": image, "label": int(row) % 10}

  def __getitems__(self, rows) -> list[dict]:
    return [self[row] for row in rows]
