"""The streamed pipeline: Grain over a dataset's random-access source, one batch at a time.

For datasets larger than a device's memory (`data.pipeline=stream`). The order of an
epoch is the device pipeline's own permutation of (seed, phase, epoch), so both pipelines
see the same batches in the same order. Global batch `s` of epoch `e` is rows
`order[s·B : (s+1)·B]`; process `p` of `P` reads, decodes and augments only its slice
`[p·B/P, (p+1)·B/P)` of it, and the slices become one global array sharded on the
`("data",)` mesh. Augmentation draws its random numbers for the whole global batch from
(seed, phase, epoch, step), so an example looks the same whichever process reads it:
1 process and 2 train alike.

A phase's training batches are one Grain `MapDataset` over its global steps (element k is
step k of the phase), read ahead by Grain's threads (and `data.workers` processes), and
placed on the device two steps before its step runs. The state that goes into every
checkpoint is the iterator's position after the last batch a step has consumed (not after
the ones placed ahead), so a run resumed mid-epoch reads on from exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any, Callable, Iterator

import jax
import numpy as np

from alphaprune import devices, steps
from alphaprune.data import augment, order as order_lib, records
from alphaprune.data.source import Source


@dataclasses.dataclass(frozen=True)
class TrainBatches:
  """Grain transform: global step k of a phase → this process's slice of its batch."""

  source: Any  # the random-access source of the training split
  rows: np.ndarray  # the rows of that split that train
  batch_size: int  # global
  seed: int
  salt: int  # the phase's data-order salt (rngs.DATA_ORDER)
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
    order = order_lib.epoch_order(self.seed, epoch, len(self.rows), self.salt)
    local = self.batch_size // self.process_count
    lo = self.process_index * local
    start = step * self.batch_size + lo
    return epoch, step, lo, self.rows[order[start:start + local]]

  def __call__(self, k: int) -> dict:
    yield_cpu()
    epoch, step, lo, rows = self.rows_at(k)
    images, labels = records.read_rows(self.source, rows)
    rng = np.random.default_rng([self.seed, self.salt, epoch, step])
    images = augment.host_augment(self.augment, images, self.image_shape[0], rng,
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
  varying_size: bool
  process_index: int = 0
  process_count: int = 1

  def __len__(self) -> int:
    return -(-len(self.rows) // self.batch_size)

  def __call__(self, k: int) -> dict:
    yield_cpu()
    local = self.batch_size // self.process_count
    lo = int(k) * self.batch_size + self.process_index * local
    rows = self.rows[lo:lo + local]
    images, labels = records.read_rows(self.source, rows)
    if self.varying_size:
      images = [augment.resize_centre_crop(image, self.image_shape[0]) for image in images]
    pad = local - len(rows)
    image = np.concatenate([np.asarray(images, np.uint8).reshape((-1,) + self.image_shape),
                            np.zeros((pad,) + self.image_shape, np.uint8)])
    label = np.concatenate([labels, np.zeros(pad, np.int32)])
    mask = np.concatenate([np.ones(len(rows), np.float32), np.zeros(pad, np.float32)])
    return {"image": image, "label": label, "mask": mask}


def _lowest_priority(worker_index: int, worker_count: int) -> None:
  """Grain's worker processes yield the CPU to training: on a host with few cores they read
  in the time the step leaves idle instead of slowing it down (on a 2-core machine the
  streamed LeNet-5 epoch's overhead fell from about 1.36 to 1.13–1.20)."""
  del worker_index, worker_count
  os.nice(19)


_thread = threading.local()  # per reading thread: whether it is niced yet


def yield_cpu() -> None:
  """The same for Grain's reading threads (Linux: a thread's own priority), once each."""
  if not getattr(_thread, "niced", False):
    _thread.niced = True
    if threading.current_thread() is not threading.main_thread():
      try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
      except (AttributeError, OSError):  # not Linux
        pass


@dataclasses.dataclass
class StreamPhase:
  """One phase's input, streamed: its Grain iterator (whose state is checkpointed) and the
  run-wide arrays its step reads (`aux`)."""

  pipeline: "StreamPipeline"
  iterator: "Consumed"
  aux: dict

  def train_epoch(self, state: steps.TrainState, cfg: steps.StepConfig,
                  partial: dict | None = None,
                  midway: Callable | None = None) -> tuple[steps.TrainState, dict]:
    """The rest of the state's epoch, batch by batch: (state, the epoch's mean metrics).
    `partial`: the metric sums of an epoch resumed midway; after every step but the
    epoch's last, `midway(step, state, sums)` (the driver saves or stops there)."""
    per_epoch = self.pipeline.steps_per_epoch
    step = int(state.step)
    sums = None if partial is None else devices.put_replicated(
        {key: np.asarray(value, np.float32) for key, value in partial.items()}, cfg.mesh)
    left = per_epoch - (step - int(state.epoch) * per_epoch)
    for batch in self.placed_ahead(left):
      if sums is None:
        sums = devices.put_replicated(jax.tree.map(
            np.asarray, steps.zero_sums(state, batch, self.aux, cfg)), cfg.mesh)
      state, sums = steps.train_batch(state, sums, batch, self.aux, cfg)
      step += 1
      if step % per_epoch == 0:  # the epoch's end: its checkpoint comes after validation
        break
      if midway is not None:
        midway(step, state, sums)
    return steps.end_epoch(state), jax.tree.map(lambda total: total / per_epoch, sums)

  def placed_ahead(self, count: int, ahead: int = 2):
    """The next `count` batches on the device, each placed `ahead` steps before its step
    runs (placing is asynchronous: the copy overlaps the steps before it). The host never
    waits on a step's metrics here: they stay on the device, in the epoch's sums."""
    queue = []
    for _ in range(count):
      batch = self.pipeline.to_global(next(self.iterator.grain))
      queue.append((batch, self.iterator.grain.get_state()))
      if len(queue) > ahead:
        batch, self.iterator.position = queue.pop(0)
        yield batch
    for batch, self.iterator.position in queue:
      yield batch

  def evaluate(self, split: str, variables, alpha, cfg: steps.StepConfig) -> dict:
    return self.pipeline.evaluate_with(split, variables, alpha, self.aux, cfg)

  def close(self) -> None:
    """Ends the Grain iterator (and any worker processes)."""
    self.iterator.grain.close()


class Consumed:
  """A Grain iterator as a checkpoint sees it: its state is `position`, the state after the
  last batch a step consumed, which trails the iterator itself by the batches placed ahead.
  Grain's checkpoint handler saves and restores it as it does an iterator (JSON text)."""

  def __init__(self, iterator):
    self.grain = iterator
    self.position = iterator.get_state()

  def get_state(self) -> bytes:
    return json.dumps(self.position, indent=4).encode()

  def set_state(self, state: bytes) -> None:
    self.position = json.loads(state)
    self.grain.set_state(self.position)

  def start_prefetch(self) -> None:
    getattr(self.grain, "start_prefetch", lambda: None)()


@dataclasses.dataclass(frozen=True)
class StreamPipeline:
  """Streams one dataset onto `mesh`: training batches of a phase, evaluation batches of a
  split. `workers` Grain processes (0: threads of this one), `threads` reading threads each,
  `prefetch` batches read ahead."""

  source: Source
  batch_size: int
  eval_batch_size: int
  seed: int
  mesh: jax.sharding.Mesh
  workers: int = 0
  threads: int = 2
  prefetch: int = 4
  kind: str = "stream"
  augments_on_device: bool = False  # the host augments

  def __post_init__(self):
    for size in (self.batch_size, self.eval_batch_size):
      if size % jax.process_count():
        raise ValueError(f"batch size {size} is not divisible by {jax.process_count()} "
                         "processes")

  @property
  def steps_per_epoch(self) -> int:
    return self.source.num_examples("train") // self.batch_size

  def phase(self, salt: int, epochs: int, cfg: steps.StepConfig,
            teacher: Any = None) -> StreamPhase:
    """The input of a phase of `epochs` epochs whose step is `cfg`; `teacher`: the frozen
    teacher's variables, whose logits each step computes where `cfg.loss` needs them."""
    needs_teacher = teacher is not None and cfg.loss.needs_teacher_logits
    return StreamPhase(self, Consumed(self.train_iterator(salt, epochs)),
                       {"teacher_variables": teacher} if needs_teacher else {})

  def train_batches(self, salt: int) -> TrainBatches:
    """The Grain transform from a phase's global step to this process's batch."""
    return TrainBatches(self.source.data_source("train"), self.source.rows["train"],
                        self.batch_size, self.seed, salt, self.source.augment,
                        self.source.image_shape, jax.process_index(), jax.process_count())

  def train_iterator(self, salt: int, epochs: int):
    """A Grain iterator over the per-process batches of `epochs` epochs of a phase."""
    import grain

    batches = self.train_batches(salt)
    dataset = grain.MapDataset.range(batches.steps_per_epoch * epochs).map(batches)
    return iter(self.read_ahead(dataset))

  def read_ahead_steps(self, transform, count: int):
    """An iterator over `transform(k)` for k < count, read ahead as the training batches
    are (the bench's floor of the pipeline reads records with it and nothing else)."""
    import grain

    return iter(self.read_ahead(grain.MapDataset.range(count).map(transform)))

  def evaluate(self, split: str, variables, cfg: steps.StepConfig) -> dict:
    """{loss, accuracy, count} of a plain (unblended) network on `split`."""
    return self.evaluate_with(split, variables, None, {}, cfg)

  def evaluate_with(self, split: str, variables, alpha, aux: dict,
                    cfg: steps.StepConfig) -> dict:
    totals = jax.device_put(np.zeros(steps.TOTALS, np.float32), devices.replicated(cfg.mesh))
    for batch in self.eval_batches(split):
      totals = steps.add_batch_totals(totals, variables, alpha, batch, aux, cfg)
    return steps.metrics_of(totals)

  def eval_batches(self, split: str) -> Iterator[dict]:
    """Global evaluation batches of `split` (val, test or train) on the mesh."""
    import grain

    batches = EvalBatches(
        self.source.data_source(split), self.source.rows[split], self.eval_batch_size,
        self.source.image_shape, self.source.varying_size,
        jax.process_index(), jax.process_count())
    iterator = iter(self.read_ahead(grain.MapDataset.range(len(batches)).map(batches)))
    try:
      for batch in iterator:
        yield self.to_global(batch)
    finally:
      iterator.close()

  def to_global(self, local: dict) -> dict:
    """This process's rows of a batch → one global array per key, split over "data"."""
    return devices.put_batch(local, self.mesh)

  def read_ahead(self, dataset):
    """`dataset` (a Grain MapDataset) read ahead by threads, and worker processes if any."""
    import grain

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
