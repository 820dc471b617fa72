"""The train state and the pure, jitted functions that advance and measure it.

`state, metrics = train_step(state, batch, aux, cfg)` is one optimizer step on
one batch. The input pipelines (`alphaprune.data`) run it two ways: `train_epoch` scans
it over an epoch whose batches are gathered on device in a given order, and
`train_batch` takes one batch fed from the host, adding its metrics to the epoch's
running sums. Everything a step needs besides arrays is one frozen, hashable
`StepConfig`, passed as a static argument: α, stage and the learning-rate scale are
values inside the state, so one compilation serves every stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from alphaprune import blending, devices, losses, methods
from alphaprune import rngs as rngs_lib
from alphaprune.data import augment as augment_lib
from alphaprune import optimizer as opt_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # optimizer steps taken in this phase
  epoch: jax.Array  # epochs done in this phase
  stage: jax.Array  # index into the phase's stages
  stage_epoch: jax.Array  # epochs done in the current stage
  cuts: jax.Array  # plateau learning-rate cuts in the current stage
  alpha: jax.Array
  params: Any  # {"teacher", "student", "shared"}
  model_state: Any  # batch statistics
  masks: Any
  opt_state: Any
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything static a step, an epoch or an evaluation needs (hashable: a jit key)."""

  model: nn.Module  # the model the state's parameters are applied to
  loss: losses.Loss
  mean: tuple[float, ...]  # per-channel normalisation of [0, 1] pixels
  std: tuple[float, ...]
  mesh: jax.sharding.Mesh
  # How the trainable parts become `model`'s parameters (blending.PARAMETRISATIONS): a
  # blend form ("layer", "block") or soft pruning's one tied tensor ("soft").
  parametrisation: str = "layer"
  tx: optax.GradientTransformationExtraArgs | None = None  # None: evaluation only
  augment: bool = False  # CIFAR pad-crop and flip, per step, on the device
  batch_size: int = 128
  eval_batch_size: int = 1000
  teacher_model: nn.Module | None = None  # the frozen teacher, for per-step targets
  gmp: methods.GmpSettings | None = None  # masks follow the weights (method=gmp)
  # > 0: the student's gradient is scaled by min(1 / (1 − α), this cap), undoing the layer
  # form's (1 − α) (blend.rescale_student_grad); 0: as the two-branch network gives it.
  student_grad_cap: float = 0.0
  track_student: bool = False  # metrics of the student's gradient and update norms
  # The forward and backward pass's dtype (COMPUTE_DTYPES); parameters, optimizer state, the
  # blend, loss, metrics and batch statistics stay float32.
  compute_dtype: str = "float32"


def init_state(params, model_state, masks, tx, seed) -> TrainState:
  """A fresh state that owns its buffers (steps donate it, so nothing may alias the
  caller's arrays); every leaf a jax array, so the first step compiles what later ones reuse."""
  params, model_state, masks = jax.tree.map(jnp.array, (params, model_state, masks))
  zero = lambda: jnp.zeros((), jnp.int32)  # one buffer each: the state is donated
  return TrainState(step=zero(), epoch=zero(), stage=zero(), stage_epoch=zero(), cuts=zero(),
                    alpha=jnp.asarray(1.0, jnp.float32), params=params,
                    model_state=model_state, masks=masks, opt_state=tx.init(params),
                    rng=rngs_lib.key(seed, rngs_lib.STEP))


COMPUTE_DTYPES = ("float32", "bfloat16")


def apply_model(model, variables, x, train: bool, alpha, key=None, dtype: str = "float32"):
  """(logits, updated batch statistics). Built-in models use α (block form); dropout, in
  training, draws from `key`. With `dtype` bfloat16 the parameters (already blended, in
  float32) and the input are cast to it for the forward pass, and so for the backward one:
  any Flax model computes in it; the logits and the batch statistics come back in float32."""
  rngs = {"dropout": jax.random.fold_in(key, rngs_lib.DROPOUT)} if key is not None else None
  collections = [k for k in variables if k != "params"]
  if dtype != "float32":
    low = jnp.dtype(dtype)
    cast = lambda v: v.astype(low) if jnp.issubdtype(v.dtype, jnp.floating) else v
    variables = {**variables, "params": jax.tree.map(cast, variables["params"])}
    x = x.astype(low)
  if train and collections:
    logits, new = model.apply(variables, x, train=True, alpha=alpha, mutable=collections,
                              rngs=rngs)
    if dtype != "float32":
      logits = logits.astype(jnp.float32)
      new = jax.tree.map(lambda v: v.astype(jnp.float32), new)
    return logits, new
  logits = model.apply(variables, x, train=train, alpha=alpha, rngs=rngs)
  return (logits.astype(jnp.float32) if dtype != "float32" else logits), {}


def variables_of(state: TrainState, parametrisation: str) -> dict:
  """The variables the blended model is applied to, at the state's α."""
  return {"params": blending.model_params(parametrisation, state.alpha, state.params,
                                          state.masks),
          **state.model_state}


# ------------------------------------------------------------------ training

def train_step(state: TrainState, batch: dict, aux: dict,
               cfg: StepConfig) -> tuple[TrainState, dict]:
  """One optimizer step on one batch: pure in (state, batch, aux).

  `aux` holds run-wide arrays: `teacher_variables` (targets computed per step,
  for augmented data) and `target_var` (the per_logit reduction).
  """
  key = jax.random.fold_in(state.rng, state.step)
  images = augment_lib.pad_crop_flip(key, batch["image"]) if cfg.augment else batch["image"]
  x = augment_lib.normalise(images, cfg.mean, cfg.std)
  teacher_logits = batch.get("teacher_logits")
  if teacher_logits is None and aux.get("teacher_variables") is not None:
    teacher_logits, _ = apply_model(cfg.teacher_model, aux["teacher_variables"], x, False, None,
                                    dtype=cfg.compute_dtype)

  def loss_of(params):
    variables = {"params": blending.model_params(cfg.parametrisation, state.alpha, params,
                                                 state.masks),
                 **state.model_state}
    logits, new_model_state = apply_model(cfg.model, variables, x, True, state.alpha, key,
                                          cfg.compute_dtype)
    per_example, per_logit = cfg.loss.per_example(logits, batch["label"], teacher_logits,
                                                  aux.get("target_var"))
    return jnp.mean(per_example), (logits, new_model_state, per_logit)

  (loss, (logits, new_model_state, per_logit)), grads = jax.value_and_grad(
      loss_of, has_aux=True)(state.params)
  if cfg.student_grad_cap:
    scale = jnp.minimum(1.0 / (1.0 - state.alpha), cfg.student_grad_cap)
    grads = {**grads, "student": jax.tree.map(lambda g: g * scale, grads["student"])}
  updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params, masks=state.masks)
  metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
  if per_logit is not None:
    metrics["per_logit"] = jnp.mean(per_logit, 0)
  if cfg.track_student:
    metrics["student_grad_norm"] = optax.global_norm(grads["student"])
    metrics["student_update_norm"] = optax.global_norm(updates["student"])
  params, masks = optax.apply_updates(state.params, updates), state.masks
  if cfg.gmp is not None:  # gradual magnitude pruning: the masks follow the trained weights
    masks = methods.gmp_masks(params["student"], masks, state.step, cfg.gmp)
    params = {**params, "student": blending.apply_masks(params["student"], masks)}
  return state.replace(step=state.step + 1, params=params, masks=masks, opt_state=opt_state,
                       model_state={**state.model_state, **new_model_state}), metrics


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("state",))
def train_epoch(state: TrainState, arrays: dict, order: jax.Array, aux: dict,
                cfg: StepConfig) -> tuple[TrainState, dict]:
  """One whole epoch over `arrays` (on device) in `order`: (state, epoch-mean metrics).

  `order` is a permutation of the rows (`data.order.epoch_order`, computed on the host:
  XLA's sort is slow on a CPU). The remainder of n / batch_size is dropped. Parameters and optimizer state stay replicated; only batches
  are split on "data".
  """
  batch_sharding = devices.batch_sharded(cfg.mesh)

  def body(state, i):
    idx = jax.lax.dynamic_slice_in_dim(order, i * cfg.batch_size, cfg.batch_size)
    batch = {k: jax.lax.with_sharding_constraint(v[idx], batch_sharding)
             for k, v in arrays.items()}
    return train_step(state, batch, aux, cfg)

  state, metrics = jax.lax.scan(body, state, jnp.arange(order.shape[0] // cfg.batch_size))
  metrics = jax.tree.map(lambda m: jnp.mean(m, 0), metrics)
  state = state.replace(epoch=state.epoch + 1, stage_epoch=state.stage_epoch + 1)
  return jax.lax.with_sharding_constraint((state, metrics), devices.replicated(cfg.mesh))


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("state", "sums"))
def train_indexed(state: TrainState, sums: dict, arrays: dict, order: jax.Array, index,
                  aux: dict, cfg: StepConfig) -> tuple[TrainState, dict]:
  """Step `index` of an epoch held on the device, gathered there in `order`: (state, the
  epoch's metric sums + this step's). The device pipeline runs an epoch as a loop of these
  where XLA:CPU would run the model's convolutions slowly inside `train_epoch`'s scan."""
  idx = jax.lax.dynamic_slice_in_dim(order, index * cfg.batch_size, cfg.batch_size)
  batch_sharding = devices.batch_sharded(cfg.mesh)
  batch = {k: jax.lax.with_sharding_constraint(v[idx], batch_sharding) for k, v in arrays.items()}
  state, metrics = train_step(state, batch, aux, cfg)
  sums = jax.tree.map(jnp.add, sums, metrics)
  return jax.lax.with_sharding_constraint((state, sums), devices.replicated(cfg.mesh))


def uses_xla_convolution(model, image_shape) -> bool:
  """Whether `model`'s forward pass holds XLA convolutions (a user's nn.Conv; the built-in
  models' own convolutions are matmuls on a CPU). Inside a loop, XLA:CPU lays their
  gradients out in a form its fast convolution cannot take, and runs them several times
  slower than outside one (a flax MNIST CNN's epoch: 12 s as one scan, 0.8 s as steps)."""
  x = jnp.zeros((1,) + tuple(image_shape))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x))(variables)
  return _holds(jaxpr.jaxpr, "conv_general_dilated")


def _holds(jaxpr, primitive: str) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      return True
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (list, tuple)) else (value,)):
        inner = getattr(sub, "jaxpr", None)
        if inner is not None and _holds(getattr(inner, "jaxpr", inner), primitive):
          return True
  return False


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("state", "sums"))
def train_batch(state: TrainState, sums: dict, batch: dict, aux: dict,
                cfg: StepConfig) -> tuple[TrainState, dict]:
  """One step on a batch streamed from the host: (state, the epoch's metric sums + this
  step's)."""
  state, metrics = train_step(state, batch, aux, cfg)
  sums = jax.tree.map(jnp.add, sums, metrics)
  return jax.lax.with_sharding_constraint((state, sums), devices.replicated(cfg.mesh))


def zero_sums(state: TrainState, batch: dict, aux: dict, cfg: StepConfig) -> dict:
  """Zeros shaped like one step's metrics: the running sums a streamed epoch starts from."""
  shapes = jax.eval_shape(lambda s, b: train_step(s, b, aux, cfg)[1], state, batch)
  return jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), shapes)


@functools.partial(jax.jit, donate_argnames=("state",))
def end_epoch(state: TrainState) -> TrainState:
  return state.replace(epoch=state.epoch + 1, stage_epoch=state.stage_epoch + 1)


# ------------------------------------------------------------------ stages and the plateau

@functools.partial(jax.jit, static_argnames=("opt", "clear_momentum"),
                   donate_argnames=("state",))
def start_stage(state: TrainState, alpha, opt: opt_lib.Optimizer,
                clear_momentum: bool = False) -> TrainState:
  """A new stage: its α, the initial learning rate again, no cuts counted yet."""
  return state.replace(alpha=alpha, cuts=jnp.zeros_like(state.cuts),
                       opt_state=opt_lib.reset_stage(opt, state.opt_state, state.params,
                                                     clear_momentum))


@functools.partial(jax.jit, static_argnames=("opt",), donate_argnames=("state",))
def observe(state: TrainState, val_loss, opt: opt_lib.Optimizer) -> TrainState:
  """One epoch's plateau update from the validation loss; counts a learning-rate cut."""
  before = opt_lib.lr_scale(state.opt_state)
  opt_state = opt_lib.observe_validation_loss(opt, state.opt_state, val_loss)
  cut = opt_lib.lr_scale(opt_state) < before
  return state.replace(opt_state=opt_state, cuts=state.cuts + cut.astype(state.cuts.dtype))


# ------------------------------------------------------------------ evaluation

ECE_BINS = 15  # expected calibration error: confidence bins of width 1/15
TOTALS = 4 + 3 * ECE_BINS  # what `batch_totals` sums (see `metrics_of`)


def batch_totals(variables, alpha, batch: dict, aux: dict, cfg: StepConfig) -> jax.Array:
  """Sums over one padded batch (0/1 `mask`): [loss, correct predictions, examples,
  negative log-likelihood (softmax cross-entropy on the labels), then per confidence bin:
  examples, their summed confidence, their correct predictions]. The frozen teacher's
  logits come with the batch or, streamed, from `aux`."""
  x = augment_lib.normalise(batch["image"], cfg.mean, cfg.std)
  logits, _ = apply_model(cfg.model, variables, x, False, alpha, dtype=cfg.compute_dtype)
  teacher_logits = batch.get("teacher_logits")
  if teacher_logits is None and aux.get("teacher_variables") is not None:
    teacher_logits, _ = apply_model(cfg.teacher_model, aux["teacher_variables"], x, False, None,
                                    dtype=cfg.compute_dtype)
  per_example, _ = cfg.loss.per_example(logits, batch["label"], teacher_logits,
                                        aux.get("target_var"))
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  mask = batch["mask"]
  nll = losses.cross_entropy(logits, batch["label"])
  confidence = jnp.max(jax.nn.softmax(logits.astype(jnp.float32)), -1)
  bins = jax.nn.one_hot(jnp.clip(jnp.floor(confidence * ECE_BINS), 0, ECE_BINS - 1).astype(
      jnp.int32), ECE_BINS) * mask[:, None]
  return jnp.concatenate([
      jnp.stack([jnp.sum(per_example * mask), jnp.sum(correct * mask), jnp.sum(mask),
                 jnp.sum(nll * mask)]),
      jnp.sum(bins, 0), jnp.sum(bins * confidence[:, None], 0), jnp.sum(bins * correct[:, None], 0)])


def metrics_of(totals) -> dict:
  """{loss, accuracy, count, nll, ece} from summed `batch_totals`: ECE is Σ over bins of
  |correct − confidence| / examples (Guo et al. 2017, 15 bins)."""
  count = totals[2]
  in_bins = totals[4 + ECE_BINS:4 + 2 * ECE_BINS], totals[4 + 2 * ECE_BINS:]
  return {"loss": totals[0] / count, "accuracy": totals[1] / count, "count": count,
          "nll": totals[3] / count,
          "ece": jnp.sum(jnp.abs(in_bins[1] - in_bins[0])) / count}


@functools.partial(jax.jit, static_argnames=("cfg",))
def evaluate(variables, alpha, arrays: dict, aux: dict, cfg: StepConfig) -> dict:
  """{loss, accuracy, count} over every example of `arrays` once (padded, with a 0/1 mask)."""
  bs = cfg.eval_batch_size

  def body(totals, i):
    batch = {k: jax.lax.dynamic_slice_in_dim(v, i * bs, bs) for k, v in arrays.items()}
    return totals + batch_totals(variables, alpha, batch, aux, cfg), None

  totals, _ = jax.lax.scan(body, jnp.zeros(TOTALS), jnp.arange(arrays["label"].shape[0] // bs))
  return metrics_of(totals)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("totals",))
def add_batch_totals(totals, variables, alpha, batch: dict, aux: dict, cfg: StepConfig):
  """`totals` + one evaluation batch's, fed from the host (the streamed pipeline)."""
  return jax.lax.with_sharding_constraint(totals + batch_totals(variables, alpha, batch, aux, cfg),
                                          devices.replicated(cfg.mesh))


@functools.partial(jax.jit, static_argnames=("cfg",))
def logits_of(variables, arrays: dict, cfg: StepConfig) -> jax.Array:
  """Logits of every (padded) example, eval mode."""
  images = arrays["image"]
  batches = images.reshape((-1, cfg.eval_batch_size) + images.shape[1:])
  out = jax.lax.map(lambda batch: apply_model(cfg.model, variables, augment_lib.normalise(
      batch, cfg.mean, cfg.std), False, None, dtype=cfg.compute_dtype)[0], batches)
  return out.reshape((-1, out.shape[-1]))


# ------------------------------------------------------------------ compilations

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# The programs that train, whichever the input pipeline runs: an epoch as one scan, a step
# of an epoch held on the device, a step on a streamed batch.
TRAINING_PROGRAMS = ("train_epoch", "train_indexed", "train_batch")


@contextlib.contextmanager
def count_compilations(*fn_names: str):
  """Counts XLA compilations of the jitted functions `fn_names` inside the block (through
  jax.monitoring's public compile events): `with count_compilations("train_epoch") as n:`,
  then `n["count"]`."""
  counter = {"count": 0}
  names = {f"jit({name})" for name in fn_names}

  def listen(event, duration, **kwargs):
    del duration
    if event == _COMPILE_EVENT and kwargs.get("fun_name") in names:
      counter["count"] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield counter
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
