"""Written as flax's NNX MNIST example writes its CNN: rngs in the constructor only, and at
call time for dropout; and a second one called with `train`."""

from functools import partial

from flax import nnx


class CNN(nnx.Module):
  """A simple CNN model."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), rngs=rngs)
    self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
    self.linear1 = nnx.Linear(7 * 7 * 16, 32, rngs=rngs)
    self.dropout = nnx.Dropout(rate=0.1)
    self.linear2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x, rngs: nnx.Rngs | None = None):
    x = self.avg_pool(nnx.relu(self.conv1(x)))
    x = self.avg_pool(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)  # flatten
    x = self.dropout(nnx.relu(self.linear1(x)), rngs=rngs)
    return self.linear2(x)


class TrainArgCNN(nnx.Module):
  """Takes `train` at call time (and a num_classes)."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.linear1 = nnx.Linear(28 * 28, 32, rngs=rngs)
    self.bn = nnx.BatchNorm(32, rngs=rngs)
    self.linear2 = nnx.Linear(32, num_classes, rngs=rngs)

  def __call__(self, x, train: bool):
    x = x.reshape(x.shape[0], -1)
    return self.linear2(nnx.relu(self.bn(self.linear1(x), use_running_average=not train)))
