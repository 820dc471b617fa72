"""The bench's Keras peer: LeNet-300-100 and LeNet-5 as plain Keras models and as
two-branch α-blended ones, the way the original experiments wrote them.

Each blended layer holds a frozen teacher kernel, a trainable He-initialised
student kernel under a fixed magnitude mask (the teacher's largest weights,
per layer), one bias and a non-trainable α, and computes
α·op(x; W_t) + (1−α)·op(x; M⊙W_s) + b: two convolutions or matmuls per layer.
`keras_epoch_ratios` times them against the real driver on real Fashion-MNIST. Only the
benchmark imports this module (and with it TensorFlow: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

from alphaprune import train
from alphaprune.bench.inputs import fashion_mnist
from alphaprune.bench.timing import fresh
from alphaprune.data import augment, device

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402  (after the log level, so TensorFlow starts quietly)


class _Blended(keras.layers.Layer):
  """Shared parts of a two-branch layer; subclasses give the kernel shape and the op."""

  def __init__(self, alpha: float, keep: float, activation=None, **kwargs):
    super().__init__(**kwargs)
    self.alpha_value, self.keep, self.activation = alpha, keep, keras.activations.get(activation)

  def _add_branches(self, kernel_shape, features):
    self.teacher = self.add_weight(shape=kernel_shape, initializer="glorot_uniform",
                                   trainable=False, name="teacher")
    self.student = self.add_weight(shape=kernel_shape, initializer="he_normal", name="student")
    magnitude = np.abs(keras.ops.convert_to_numpy(self.teacher))
    kept = max(1, int(round(self.keep * magnitude.size)))
    threshold = np.sort(magnitude, axis=None)[-kept]
    self.mask = self.add_weight(shape=kernel_shape, trainable=False, name="mask",
                                initializer=keras.initializers.Constant(
                                    (magnitude >= threshold).astype("float32")))
    self.bias = self.add_weight(shape=(features,), initializer="zeros", name="bias")
    self.alpha = self.add_weight(shape=(), trainable=False, name="alpha",
                                 initializer=keras.initializers.Constant(self.alpha_value))

  def call(self, x):
    student = self.student * self.mask
    y = self.alpha * self.op(x, self.teacher) + (1.0 - self.alpha) * self.op(x, student)
    return self.activation(y + self.bias)


class BlendedDense(_Blended):
  def __init__(self, units: int, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, input_shape):
    self._add_branches((input_shape[-1], self.units), self.units)

  def op(self, x, kernel):
    return keras.ops.matmul(x, kernel)


class BlendedConv2D(_Blended):
  def __init__(self, filters: int, kernel_size: int, padding: str, **kwargs):
    super().__init__(**kwargs)
    self.filters, self.kernel_size, self.padding = filters, kernel_size, padding

  def build(self, input_shape):
    k = self.kernel_size
    self._add_branches((k, k, input_shape[-1], self.filters), self.filters)

  def op(self, x, kernel):
    return keras.ops.conv(x, kernel, strides=1, padding=self.padding)


def build(model: str, blended: bool, alpha: float = 0.5, keep: float = 0.35,
          input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
  """`mlp` (LeNet-300-100) or `lenet5`, plain or two-branch blended, compiled with Adam 1e-3
  and cross-entropy on logits (Keras's defaults otherwise: on a CPU-only machine that
  means TensorFlow's own kernels, no XLA)."""
  blend = dict(alpha=alpha, keep=keep)
  dense = ((lambda n, act=None: BlendedDense(n, activation=act, **blend)) if blended
           else (lambda n, act=None: keras.layers.Dense(n, activation=act)))
  conv = ((lambda n, pad: BlendedConv2D(n, 5, pad, activation="relu", **blend)) if blended
          else (lambda n, pad: keras.layers.Conv2D(n, 5, padding=pad, activation="relu")))
  pool = lambda: keras.layers.MaxPooling2D(2, padding="same")
  if model == "mlp":
    body = [keras.layers.Flatten(), dense(300, "relu"), dense(100, "relu")]
  elif model == "lenet5":
    body = [conv(6, "same"), pool(), conv(16, "valid"), pool(), keras.layers.Flatten(),
            dense(120, "relu"), dense(84, "relu")]
  else:
    raise ValueError(f"no Keras peer for model {model!r}; choose mlp or lenet5")
  net = keras.Sequential([keras.Input(input_shape), *body, dense(num_classes)])
  net.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
  return net


class _EpochTimer(keras.callbacks.Callback):
  def on_train_begin(self, logs=None):
    self.seconds = []

  def on_epoch_begin(self, epoch, logs=None):
    self._t0 = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
    self.seconds.append(time.perf_counter() - self._t0)


def epoch_seconds(net: keras.Model, train_xy: tuple, val_xy: tuple, epochs: int,
                  batch_size: int = 128) -> dict:
  """`model.fit` for `epochs` epochs (training + validation each): every epoch's seconds,
  their median after the first (which builds the graph) and the final validation accuracy."""
  timer = _EpochTimer()
  history = net.fit(*train_xy, batch_size=batch_size, epochs=epochs, validation_data=val_xy,
                    shuffle=True, verbose=0, callbacks=[timer])
  return {"epoch_seconds": timer.seconds,
          "median_epoch_seconds": statistics.median(timer.seconds[1:] or timer.seconds),
          "val_accuracy": float(history.history["val_accuracy"][-1])}



def _driver_epochs(workdir: str, model: str, epochs: int, data_dir: str) -> dict:
  """The real driver on real Fashion-MNIST: `epochs` epochs of dense pretraining, then two
  α-stages (0.5, then 0) of `epochs` / 2 epochs each (α is a value in the state, so every
  prune epoch runs the same compiled step); Adam 1e-3, batch 128. Each phase's epoch
  seconds as `metrics.jsonl` records them (training, validation, the plateau update)."""
  from alphaprune.config import base_config
  config = base_config()
  config.data.update(name="fashion_mnist", data_dir=data_dir, batch_size=128)
  config.model.update(name=model, hidden=(300, 100))
  config.teacher.update(epochs=epochs, optimizer="adam", learning_rate=1e-3)
  config.train.update(optimizer="adam", learning_rate=1e-3, max_epochs_per_stage=epochs // 2)
  config.schedule.update(kind="explicit", alphas=(0.5, 0.0))
  config.report.enabled = False
  train.run(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {phase: [record["seconds"] for record in records if record.get("phase") == phase]
          for phase in ("pretrain", "prune")}


def keras_epoch_ratios(workdir: str, epochs: int = 6, rounds: int = 2) -> dict:
  """Epoch time of alphaprune ÷ Keras for the same job on real Fashion-MNIST (54,000 train,
  6,000 validation images), per model: `keras_epoch_ratio_<model>`, the α-blend prune stage
  against two-branch blended Keras layers, and `keras_dense_epoch_ratio_<model>`, dense
  pretraining against the plain Keras model. Under 1: alphaprune is faster.

  The three take turns, `rounds` times (ours, Keras plain, Keras two-branch, then again): a
  run takes minutes and the machine drifts within one, so back-to-back blocks would charge
  the drift to whichever came later. Each figure is the median over all rounds of the
  epochs after each run's first (which compiles or builds the graph)."""
  dataset = device.to_memory(fashion_mnist(workdir))
  train_xy, val_xy = ((np.asarray(augment.normalise(split["image"], dataset.mean, dataset.std)),
                       split["label"]) for split in (dataset.train, dataset.val))
  out = {}
  for model in ("mlp", "lenet5"):
    runs: dict = {"pretrain": [], "prune": [], "keras_plain": [], "keras_two_branch": []}
    accuracy: dict = {"keras_plain": [], "keras_two_branch": []}
    for round_index in range(rounds):
      ours = _driver_epochs(fresh(workdir, f"keras_{model}_{round_index}"), model, epochs,
                            os.path.join(workdir, "tfds"))
      for phase in ("pretrain", "prune"):
        runs[phase].append(ours[phase])
      for name, blended in (("plain", False), ("two_branch", True)):
        fit = epoch_seconds(build(model, blended), train_xy, val_xy, epochs)
        runs[f"keras_{name}"].append(fit["epoch_seconds"])
        accuracy[f"keras_{name}"].append(fit["val_accuracy"])
    median = {key: statistics.median([s for run in value for s in run[1:]])
              for key, value in runs.items()}
    out[f"keras_{model}"] = {"alphaprune_pretrain_epoch_seconds": runs["pretrain"],
                             "alphaprune_prune_epoch_seconds": runs["prune"],
                             "keras_plain_epoch_seconds": runs["keras_plain"],
                             "keras_two_branch_epoch_seconds": runs["keras_two_branch"],
                             "median_epoch_seconds": median,
                             "keras_val_accuracy": accuracy}
    out[f"keras_epoch_ratio_{model}"] = median["prune"] / median["keras_two_branch"]
    out[f"keras_dense_epoch_ratio_{model}"] = median["pretrain"] / median["keras_plain"]
  return out
