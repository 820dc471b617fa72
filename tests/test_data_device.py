"""data.device: evaluation padding, and an epoch as one scan or as a loop of steps."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import blending, devices, losses, masks as masks_lib, models, steps, usermodels
from alphaprune import optimizer as opt_lib
from alphaprune.data import device

WILD_CNN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wild", "mnist_cnn.py:CNN")


def test_eval_padding_counts_every_example_once():
  arrays = {"image": np.zeros((103, 2, 2, 1), np.uint8), "label": np.arange(103) % 10}
  padded = device.pad_for_eval(arrays, 25)
  assert len(padded["label"]) == 125 and padded["mask"].sum() == 103
  np.testing.assert_array_equal(padded["label"][:103], arrays["label"])


def test_an_epoch_as_a_loop_of_steps_trains_as_the_scan_does():
  """The device pipeline runs a model with XLA convolutions (slow inside a loop on a CPU) as a
  loop of compiled steps over the same batches in the same order: the same training."""
  cnn = usermodels.check(usermodels.make(WILD_CNN, 10), "cnn", (28, 28, 1), 10)
  assert steps.uses_xla_convolution(cnn, (28, 28, 1))
  assert not steps.uses_xla_convolution(models.make_model({"name": "cnn"}, 10), (28, 28, 1))
  mesh = devices.make_mesh()
  rng = np.random.default_rng(0)
  train = {"image": rng.integers(0, 255, (96, 28, 28, 1)).astype(np.uint8),
           "label": rng.integers(0, 10, 96).astype(np.int32)}
  splits = device.Splits(devices.put_replicated(train, mesh), {}, {})
  variables = cnn.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.5)
  opt = opt_lib.make_optimizer(optimizer="adam", learning_rate=1e-3)
  cfg = steps.StepConfig(model=cnn, loss=losses.Loss(), mean=(0.3,), std=(0.3,), mesh=mesh,
                         tx=opt.tx, batch_size=32)
  results = []
  for stepwise in (False, True):
    params, model_state, state_masks = blending.init_params("layer", jax.random.key(1),
                                                            variables, masks)
    state = devices.put_replicated(steps.init_state(params, model_state, state_masks, opt.tx, 0),
                                   mesh).replace(alpha=jnp.float32(0.5))
    phase = device.DevicePhase(splits, {}, 0, 2, stepwise)
    state, metrics = phase.train_epoch(state, cfg)
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (scan_params, scan_metrics), (step_params, step_metrics) = results
  for a, b in zip(jax.tree.leaves(scan_params), jax.tree.leaves(step_params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(scan_metrics["loss"], step_metrics["loss"], rtol=1e-5)
