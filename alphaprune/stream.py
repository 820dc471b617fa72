"""The streamed input pipeline: Grain over TFDS's ArrayRecord source, one batch at a time.

For datasets larger than a device's memory (`data.pipeline=stream`). The order
of an epoch is the on-device pipeline's own permutation of (seed, phase, epoch),
so both pipelines see the same batches in the same order. Global batch `s` of
epoch `e` is rows `order[s·B : (s+1)·B]`; process `p` of `P` reads, decodes and
augments only its slice `[p·B/P, (p+1)·B/P)` of it, and the slices become one
global array sharded on the `("data",)` mesh. Augmentation draws its random
numbers for the whole global batch from (seed, phase, epoch, step), so an
example looks the same whichever process reads it: 1 process and 2 train alike.

A phase's training batches are one Grain `MapDataset` over its global steps
(element k is step k of the phase), read ahead by Grain's threads (and
`data.workers` processes). Its iterator state goes into every checkpoint, so a
run resumed mid-epoch reads on from exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Iterator

import grain
import jax
import numpy as np

from alphaprune import data, devices


@dataclasses.dataclass(frozen=True)
class TrainBatches:
  """Grain transform: global step k of a phase → this process's slice of its batch."""

  source: Any  # TFDS's data source of the training split
  rows: np.ndarray  # the rows of that split that train
  batch_size: int  # global
  seed: int
  stream: int
  augment: str
  image_shape: tuple
  process_index: int = 0
  process_count: int = 1

  @property
  def steps_per_epoch(self) -> int:
    return len(self.rows) // self.batch_size

  def rows_at(self, k: int) -> tuple[int, int, int, np.ndarray]:
    """(epoch, step, this process's first position in the global batch, its rows)."""
    epoch, step = divmod(int(k), self.steps_per_epoch)
    order = data.epoch_order(self.seed, epoch, len(self.rows), self.stream)
    b = self.batch_size // self.process_count
    lo = self.process_index * b
    return epoch, step, lo, self.rows[order[step * self.batch_size + lo:
                                             step * self.batch_size + lo + b]]

  def __call__(self, k: int) -> dict:
    _yield_cpu()
    epoch, step, lo, rows = self.rows_at(k)
    images, labels = data.read_rows(self.source, rows)
    rng = np.random.default_rng([self.seed, self.stream, epoch, step])
    images = data.host_augment(self.augment, images, self.image_shape[0], rng,
                               self.batch_size, lo)
    return {"image": images, "label": labels}


@dataclasses.dataclass(frozen=True)
class EvalBatches:
  """Grain transform: global evaluation batch k → this process's slice, padded with a 0/1
  `mask` past the split's end; images of varying size resized and centre-cropped."""

  source: Any
  rows: np.ndarray
  batch_size: int  # global
  image_shape: tuple
  varying: bool
  process_index: int = 0
  process_count: int = 1

  def __len__(self) -> int:
    return -(-len(self.rows) // self.batch_size)

  def __call__(self, k: int) -> dict:
    _yield_cpu()
    b = self.batch_size // self.process_count
    lo = int(k) * self.batch_size + self.process_index * b
    rows = self.rows[lo:lo + b]
    images, labels = data.read_rows(self.source, rows)
    if self.varying:
      images = [data.resize_centre_crop(i, self.image_shape[0]) for i in images]
    pad = b - len(rows)
    image = np.concatenate([np.asarray(images, np.uint8).reshape((-1,) + self.image_shape),
                            np.zeros((pad,) + self.image_shape, np.uint8)])
    label = np.concatenate([labels, np.zeros(pad, np.int32)])
    mask = np.concatenate([np.ones(len(rows), np.float32), np.zeros(pad, np.float32)])
    return {"image": image, "label": label, "mask": mask}


def _lowest_priority(worker_index: int, worker_count: int) -> None:
  """Grain's worker processes yield the CPU to training: on a host with few cores they read
  in the time the step leaves idle instead of slowing it down (on this 2-core machine the
  streamed LeNet-5 epoch's overhead fell from about 1.36 to 1.13–1.20)."""
  del worker_index, worker_count
  os.nice(19)


_thread = threading.local()  # per reading thread: whether it is niced yet


def _yield_cpu() -> None:
  """The same for Grain's reading threads (Linux: a thread's own priority), once each."""
  if not getattr(_thread, "niced", False):
    _thread.niced = True
    if threading.current_thread() is not threading.main_thread():
      try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
      except (AttributeError, OSError):  # not Linux
        pass


@dataclasses.dataclass(frozen=True)
class Feed:
  """Streams one dataset onto `mesh`: training batches of a phase, evaluation batches of a
  split. `workers` Grain processes (0: threads of this one), `threads` reading threads each,
  `prefetch` batches read ahead."""

  source: data.Source
  batch_size: int
  eval_batch_size: int
  seed: int
  mesh: jax.sharding.Mesh
  workers: int = 0
  threads: int = 2
  prefetch: int = 4

  def __post_init__(self):
    for size in (self.batch_size, self.eval_batch_size):
      if size % jax.process_count():
        raise ValueError(f"batch size {size} is not divisible by {jax.process_count()} "
                         "processes")

  @property
  def steps_per_epoch(self) -> int:
    return self.source.num_examples("train") // self.batch_size

  def train_iterator(self, stream: int, epochs: int):
    """A Grain iterator over the per-process batches of `epochs` epochs of a phase."""
    batches = TrainBatches(
        self.source.data_source("train"), self.source.rows["train"], self.batch_size,
        self.seed, stream, self.source.augment, self.source.image_shape,
        jax.process_index(), jax.process_count())
    dataset = grain.MapDataset.range(batches.steps_per_epoch * epochs).map(batches)
    return iter(self._read_ahead(dataset))

  def eval_batches(self, split: str) -> Iterator[dict]:
    """Global evaluation batches of `split` (val, test or train) on the mesh."""
    batches = EvalBatches(
        self.source.data_source(split), self.source.rows[split], self.eval_batch_size,
        self.source.image_shape, None in self.source.stored_shape[:2],
        jax.process_index(), jax.process_count())
    iterator = iter(self._read_ahead(grain.MapDataset.range(len(batches)).map(batches)))
    try:
      for batch in iterator:
        yield self.to_global(batch)
    finally:
      iterator.close()

  def to_global(self, local: dict) -> dict:
    """This process's rows of a batch → one global array per key, split over "data"."""
    return devices.put_batch(local, self.mesh)

  def _read_ahead(self, dataset: grain.MapDataset) -> grain.IterDataset:
    it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                   prefetch_buffer_size=self.prefetch))
    if self.workers:
      from absl import flags
      if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags (library use)
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                       per_worker_buffer_size=self.prefetch),
                          worker_init_fn=_lowest_priority)
    return it
