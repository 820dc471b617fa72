"""User models for the tests: a Linen and an NNX network with batch norm and dropout."""

import flax.linen as nn
from flax import nnx


class LinenNet(nn.Module):
  num_classes: int
  hidden: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.hidden)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
    return nn.Dense(self.num_classes)(x)


class NNXNet(nnx.Module):
  def __init__(self, num_classes, hidden=32, *, rngs):
    self.fc = nnx.Linear(28 * 28, hidden, rngs=rngs)
    self.bn = nnx.BatchNorm(hidden, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    return self.head(self.drop(nnx.relu(self.bn(self.fc(x)))))


class NNXListNet(nnx.Module):
  """Layers in a list: NNX numbers them (`layers/0/kernel`)."""

  def __init__(self, num_classes, hidden=16, *, rngs):
    self.layers = nnx.List([nnx.Linear(28 * 28, hidden, rngs=rngs),
                            nnx.Linear(hidden, num_classes, rngs=rngs)])

  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    return self.layers[1](nnx.relu(self.layers[0](x)))
