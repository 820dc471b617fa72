"""The step figures: the layer and block blends and the driver's own dense step against a
plain optax step, regression against classification, and what training holds in memory.

A step is one iteration of the jitted `lax.scan` that runs an epoch (as the driver runs
it), so Python dispatch does not count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alphaprune import blending, devices, losses, masks as masks_lib, models, steps
from alphaprune import optimizer as opt_lib
from alphaprune.bench.timing import interleaved, interleaved_samples, medians, quartiles
from alphaprune.data import augment, order

CLS = losses.Loss("classification")
REG = losses.Loss("regression")


def synthetic(count, shape, classes, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 255, (count,) + shape).astype(np.uint8),
          "label": rng.integers(0, classes, count).astype(np.int32)}


def nbytes(pytree) -> int:
  return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(pytree)))


class Setup:
  """One model, batch and optimizer: dense, layer-blended and block-blended train states."""

  def __init__(self, model_cfg, shape, batch_size, num_steps, classes=10,
               dtype: str = "float32"):
    self.shape, self.batch, self.steps, self.dtype = shape, batch_size, num_steps, dtype
    self.mesh = devices.make_mesh()
    self.plain = models.make_model(model_cfg, classes)
    self.block = models.make_model(model_cfg, classes, "block")
    self.arrays = devices.put_replicated(synthetic(batch_size * num_steps, shape, classes),
                                         self.mesh)
    self.variables = self.plain.init(jax.random.key(0), jnp.zeros((1,) + shape))
    self.masks = masks_lib.compute_masks(self.variables["params"], keep_ratio=0.35)
    self.opt = opt_lib.make_optimizer(optimizer="sgd", learning_rate=1e-3)
    self.mean, self.std = (0.5,) * shape[-1], (0.25,) * shape[-1]

  def step_config(self, model, parametrisation, loss=CLS) -> steps.StepConfig:
    return steps.StepConfig(model=model, loss=loss, mean=self.mean, std=self.std,
                            mesh=self.mesh, parametrisation=parametrisation, tx=self.opt.tx,
                            batch_size=self.batch, compute_dtype=self.dtype)

  def epoch_fn(self, model, parametrisation, loss=CLS):
    """(state, arrays, aux) → (state, metrics): the driver's jitted epoch, in the order the
    device pipeline draws."""
    cfg = self.step_config(model, parametrisation, loss)

    def epoch(state, arrays, aux):
      rows = order.epoch_order(0, int(state.epoch), arrays["label"].shape[0], 0)
      return steps.train_epoch(state, arrays, devices.put_replicated(rows, self.mesh), aux,
                               cfg)
    return epoch

  def dense_state(self):
    """Plain dense training: every kernel trainable, nothing blended (masks all ones)."""
    variables = dict(self.variables)
    params = variables.pop("params")
    ones = jax.tree.map(lambda mask: np.ones(mask.shape, bool), self.masks)
    kernels, rest = blending.split(params, ones)
    return steps.init_state({"teacher": {}, "student": kernels, "shared": rest}, variables,
                            ones, self.opt.tx, 0)

  def blended_state(self, parametrisation):
    params, model_state, masks = blending.init_params(parametrisation, jax.random.key(1),
                                                      self.variables, self.masks)
    return steps.init_state(params, model_state, masks, self.opt.tx, 0).replace(
        alpha=jnp.float32(0.5))

  def plain_dense_step(self):
    """The baseline a user writes without alphaprune: optax SGD on the model's own params
    (in bfloat16, the same cast of parameters and input as the driver's)."""
    tx = optax.sgd(1e-3, momentum=0.9)
    model, mean, std, batch, dtype = self.plain, self.mean, self.std, self.batch, self.dtype

    def epoch(carry, arrays):
      def body(carry, i):
        params, extra, opt_state = carry
        sliced = jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, i * batch, batch),
                              arrays)
        x = augment.normalise(sliced["image"], mean, std)

        def loss(p):
          logits, new = steps.apply_model(model, {"params": p, **extra}, x, True, None,
                                          dtype=dtype)
          return optax.softmax_cross_entropy_with_integer_labels(
              logits, sliced["label"]).mean(), new
        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), {**extra, **new}, opt_state), value
      return jax.lax.scan(body, carry, jnp.arange(self.steps))

    variables = jax.tree.map(jnp.array, dict(self.variables))  # own copies: donated carry
    params = variables.pop("params")
    return jax.jit(epoch, donate_argnums=0), (params, variables, tx.init(params))


def _runner(holders: dict, name: str, fn, *args):
  """A zero-argument callable that runs one epoch of `fn` on `holders[name]` (donated, so
  the new state replaces it) and returns the epoch's metrics."""
  def go():
    holders[name], metrics = fn(holders[name], *args)
    return metrics
  return go


def step_ratios(setup: Setup, repeats: int) -> dict:
  """Layer- and block-form blend steps ÷ the plain dense step, and the driver's own dense
  step (its optimizer chain, shuffled batches, masks of ones) ÷ the same: what the driver
  costs apart from the blend (`driver_dense_step_ratio`)."""
  dense_fn, dense_carry = setup.plain_dense_step()
  layer_fn, block_fn = setup.epoch_fn(setup.plain, "layer"), setup.epoch_fn(setup.block, "block")
  holders = {"dense": dense_carry, "layer": setup.blended_state("layer"),
             "block": setup.blended_state("block"), "driver_dense": setup.dense_state()}
  samples = interleaved_samples({
      "dense": _runner(holders, "dense", dense_fn, setup.arrays),
      "layer": _runner(holders, "layer", layer_fn, setup.arrays, {}),
      "block": _runner(holders, "block", block_fn, setup.arrays, {}),
      "driver_dense": _runner(holders, "driver_dense", layer_fn, setup.arrays, {})}, repeats)
  per_step = {name: seconds / setup.steps for name, seconds in medians(samples).items()}
  return {"dense_step_ms": 1e3 * per_step["dense"], "layer_step_ms": 1e3 * per_step["layer"],
          "block_step_ms": 1e3 * per_step["block"],
          "driver_dense_step_ms": 1e3 * per_step["driver_dense"],
          "blend_layer_step_ratio": per_step["layer"] / per_step["dense"],
          "blend_block_step_ratio": per_step["block"] / per_step["dense"],
          "driver_dense_step_ratio": per_step["driver_dense"] / per_step["dense"],
          **{f"{figure}_quartiles": quartiles(samples, name, "dense")
             for figure, name in (("blend_layer_step_ratio", "layer"),
                                  ("blend_block_step_ratio", "block"),
                                  ("driver_dense_step_ratio", "driver_dense"))},
          "images_per_second_dense": setup.batch / per_step["dense"],
          "images_per_second_layer": setup.batch / per_step["layer"]}


def regression_ratio(setup: Setup, repeats: int) -> dict:
  """Regression on precomputed teacher logits ÷ classification, layer form."""
  logits = jax.random.normal(jax.random.key(3), (setup.batch * setup.steps, 10))
  reg_arrays = {**setup.arrays, "teacher_logits": logits}
  cls_fn, reg_fn = setup.epoch_fn(setup.plain, "layer"), setup.epoch_fn(setup.plain, "layer", REG)
  holders = {"cls": setup.blended_state("layer"), "reg": setup.blended_state("layer")}
  seconds = interleaved({"cls": _runner(holders, "cls", cls_fn, setup.arrays, {}),
                         "reg": _runner(holders, "reg", reg_fn, reg_arrays, {})}, repeats)
  return {"regression_step_ratio": seconds["reg"] / seconds["cls"]}


def memory(setup: Setup) -> dict:
  """Bytes of what training holds: α-blending vs plain training of the same model."""
  dense = setup.dense_state()
  blended = setup.blended_state("layer")
  plain_params = setup.variables["params"]
  plain_opt = optax.sgd(1e-3, momentum=0.9).init(plain_params)
  return {
      "plain_params_bytes": nbytes(plain_params), "plain_opt_state_bytes": nbytes(plain_opt),
      "blend_teacher_bytes": nbytes(blended.params["teacher"]),
      "blend_student_bytes": nbytes(blended.params["student"]),
      "blend_shared_bytes": nbytes(blended.params["shared"]),
      "blend_masks_bytes": nbytes(blended.masks),
      "blend_opt_state_bytes": nbytes(blended.opt_state),
      "blend_total_bytes": nbytes((blended.params, blended.masks, blended.opt_state)),
      "plain_total_bytes": nbytes((plain_params, plain_opt)),
      "dense_driver_total_bytes": nbytes((dense.params, dense.masks, dense.opt_state)),
  }
