"""Models that break a convention the driver relies on; each is refused in one line."""

import dataclasses
from typing import Any

import flax.linen as nn


class StatsWithoutTrain(nn.Module):
  """Updates batch statistics on every call: no `train` to tell evaluation apart."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=False)(nn.Dense(16)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)


class TupleOutput(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))
    return x, x


class SevenOutputs(nn.Module):
  """No num_classes, and 7 outputs: not the dataset's 10 classes."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(7)(x.reshape((x.shape[0], -1)))


class Unhashable(nn.Module):
  num_classes: int
  widths: Any = dataclasses.field(default_factory=lambda: [16])  # a list: unhashable

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))
