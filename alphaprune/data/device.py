"""The device pipeline: every split held in device memory, an epoch one compiled scan.

For datasets that fit (Fashion-MNIST, CIFAR). Each epoch's order is drawn on the host
from (seed, phase, epoch) (`order`), the batches are gathered on the device inside the
jitted epoch, and CIFAR's pad-crop-flip runs there too, inside the step. Where the loss
needs the frozen teacher's logits they are computed once per split, unless the training
images are augmented (then per step, from `aux["teacher_variables"]`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import devices, losses, steps
from alphaprune.data import order as order_lib
from alphaprune.data.source import Source, open_source, read


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Every split of a dataset in NumPy: uint8 NHWC images, int32 labels."""

  train: dict[str, np.ndarray]
  val: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: bool  # pad-crop-flip on the device

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train["image"].shape[1:])


def to_memory(source: Source) -> Dataset:
  """Every split of `source` read into NumPy (images of one size; see `pipeline.choose`)."""
  splits = [read(source, split, source.rows[split]) for split in ("train", "val", "test")]
  return Dataset(*splits, source.num_classes, source.mean, source.std,
                 source.augment == "pad_crop_flip")


def load(name: str, **kwargs) -> Dataset:
  """Train / validation / test arrays of a dataset of equal-sized images, in memory (the
  keywords are `open_source`'s)."""
  return to_memory(open_source(name, **kwargs))


def pad_for_eval(arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads to a multiple of `batch_size`, adding a 0/1 `mask` so each example counts once."""
  count = len(arrays["label"])
  pad = -count % batch_size
  out = {key: np.concatenate([value, np.zeros((pad,) + value.shape[1:], value.dtype)])
         for key, value in arrays.items()}
  out["mask"] = np.concatenate([np.ones(count, np.float32), np.zeros(pad, np.float32)])
  return out


class Splits(NamedTuple):
  """Arrays on the mesh; val and test padded for evaluation (with a 0/1 `mask`)."""

  train: dict
  val: dict
  test: dict


@dataclasses.dataclass(frozen=True)
class DevicePhase:
  """One phase's input on the device: its splits (with the teacher's logits where its loss
  needs them) and the run-wide arrays its step reads (`aux`)."""

  splits: Splits
  aux: dict
  seed: int
  salt: int  # the phase's data-order salt (rngs.DATA_ORDER)
  stepwise: bool = False  # an epoch as a loop of steps (see steps.uses_xla_convolution)
  iterator: Any = None  # nothing to checkpoint: the order derives from (seed, salt, epoch)

  def train_epoch(self, state: steps.TrainState, cfg: steps.StepConfig, partial=None,
                  midway: Callable | None = None) -> tuple[steps.TrainState, dict]:
    """The state's next epoch, as one compiled loop, or a loop of compiled steps on the
    device's arrays (never resumed midway either way)."""
    del partial, midway
    rows = self.splits.train["label"].shape[0]
    order = devices.put_replicated(
        order_lib.epoch_order(self.seed, int(state.epoch), rows, self.salt), cfg.mesh)
    if not self.stepwise:
      return steps.train_epoch(state, self.splits.train, order, self.aux, cfg)
    count = rows // cfg.batch_size
    first = jax.tree.map(lambda v: v[:cfg.batch_size], self.splits.train)
    sums = devices.put_replicated(jax.tree.map(
        np.asarray, steps.zero_sums(state, first, self.aux, cfg)), cfg.mesh)
    for index in range(count):
      state, sums = steps.train_indexed(state, sums, self.splits.train, order, index, self.aux,
                                        cfg)
    return steps.end_epoch(state), jax.tree.map(lambda total: total / count, sums)

  def evaluate(self, split: str, variables, alpha, cfg: steps.StepConfig) -> dict:
    """{loss, accuracy, count} of `split` ("val" or "test")."""
    return steps.evaluate(variables, alpha, getattr(self.splits, split), self.aux, cfg)

  def close(self) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class DevicePipeline:
  """Every split of `source` on the mesh."""

  source: Source
  dataset: Dataset
  splits: Splits
  seed: int
  kind: str = "device"

  @classmethod
  def open(cls, source: Source, eval_batch_size: int, seed: int, mesh) -> "DevicePipeline":
    dataset = to_memory(source)
    pad = lambda arrays: pad_for_eval(arrays, eval_batch_size)
    splits = Splits(devices.put_replicated(dataset.train, mesh),
                    devices.put_replicated(pad(dataset.val), mesh),
                    devices.put_replicated(pad(dataset.test), mesh))
    return cls(source, dataset, splits, seed)

  @property
  def augments_on_device(self) -> bool:
    return self.dataset.augment

  def phase(self, salt: int, epochs: int, cfg: steps.StepConfig,
            teacher: Any = None) -> DevicePhase:
    """The input of a phase of `epochs` epochs whose step is `cfg`; `teacher`: the frozen
    teacher's variables, where `cfg.loss` needs its logits."""
    del epochs  # every epoch's order is drawn when it starts
    splits, aux = self.splits, {}
    if teacher is not None and (cfg.loss.needs_teacher_logits or cfg.loss.per_logit):
      splits, aux = self._with_teacher_targets(teacher, cfg)
    stepwise = (jax.default_backend() == "cpu"
                and steps.uses_xla_convolution(cfg.model, self.source.image_shape))
    return DevicePhase(splits, aux, self.seed, salt, stepwise)

  def evaluate(self, split: str, variables, cfg: steps.StepConfig) -> dict:
    """{loss, accuracy, count} of a plain (unblended) network on `split`."""
    return steps.evaluate(variables, None, getattr(self.splits, split), {}, cfg)

  def _with_teacher_targets(self, teacher, cfg: steps.StepConfig) -> tuple[Splits, dict]:
    """The splits with the frozen teacher's logits, and `aux`: unaugmented training data
    get their targets once, augmented batches per step (`aux["teacher_variables"]`); the
    per_logit reduction gets the targets' variance over the training set."""
    loss, splits, dataset = cfg.loss, self.splits, self.dataset
    teacher_cfg = dataclasses.replace(cfg, model=cfg.teacher_model)
    logits_of = lambda arrays: steps.logits_of(teacher, arrays, teacher_cfg)
    aux: dict = {}
    train_logits = None
    if loss.needs_teacher_logits:
      splits = splits._replace(val={**splits.val, "teacher_logits": logits_of(splits.val)},
                               test={**splits.test, "teacher_logits": logits_of(splits.test)})
      if loss.per_logit or not dataset.augment:
        count = len(dataset.train["label"])
        padded = devices.put_replicated(pad_for_eval(dataset.train, cfg.eval_batch_size),
                                        cfg.mesh)
        train_logits = logits_of(padded)[:count]
      if dataset.augment:
        aux["teacher_variables"] = teacher
      else:
        splits = splits._replace(train={**splits.train, "teacher_logits": train_logits})
    if loss.per_logit:
      aux["target_var"] = jnp.asarray(losses.target_variance(
          loss.target, None if train_logits is None else np.asarray(train_logits),
          dataset.train["label"], dataset.num_classes), jnp.float32)
    return splits, aux
