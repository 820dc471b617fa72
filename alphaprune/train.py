"""The main job: pretrain (or load) the teacher → masks → α-stages → export.

`run(config, workdir)` is the whole pipeline. Steps are pure:
`state, metrics = train_step(state, batch)`, scanned over one epoch inside a
single jitted call (`train_epoch`) whose data never leave the device. α,
stage and learning-rate scale are values in the state, so one compilation
serves every stage.

Resume order: the latest readable checkpoint in the workdir, else the
teacher (given by `teacher.checkpoint`, or pretrained here), else scratch.
Data order comes from (seed, phase, epoch) and randomness from
fold_in(rng, step), so a resumed run ends bit-identical to an uninterrupted
one.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alphaprune import blending as blend_lib
from alphaprune import checkpoint, compact, data, losses, masks as masks_lib, models, tree
from alphaprune import optimizer as opt_lib
from alphaprune import schedules
from alphaprune.config import ConfigError, SAFE_TO_CHANGE, changed_keys, schedule_of, validate

PHASES = {"pretrain": 1, "prune": 2}  # data-order streams


class NonFiniteLoss(RuntimeError):
  pass


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


def _scalar(x, dtype=jnp.int32):
  return jnp.asarray(x, dtype)


def init_state(params, model_state, masks, tx, seed) -> TrainState:
  """A fresh state that owns its buffers (steps donate it, so nothing may alias the
  caller's arrays); every leaf a jax array, so the first step compiles what later ones reuse."""
  params, model_state, masks = jax.tree.map(jnp.array, (params, model_state, masks))
  return TrainState(step=_scalar(0), epoch=_scalar(0), stage=_scalar(0), stage_epoch=_scalar(0),
                    cuts=_scalar(0), alpha=_scalar(1.0, jnp.float32), params=params,
                    model_state=model_state, masks=masks, opt_state=tx.init(params),
                    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED))


# ------------------------------------------------------------------ steps

def _apply(model, variables, x, train, alpha):
  collections = [k for k in variables if k != "params"]
  if train and collections:
    return model.apply(variables, x, train=True, alpha=alpha, mutable=collections)
  return model.apply(variables, x, train=train, alpha=alpha), {}


def _loss_kwargs(loss_cfg):
  return dict(target=loss_cfg["target"], reduction=loss_cfg["reduction"],
              temperature=loss_cfg["temperature"], distill_weight=loss_cfg["distill_weight"])


def gmp_sparsity(k, n, initial, final):
  """Zhu & Gupta (2017): s = s_f + (s_i − s_f)·(1 − k/n)³ at the k-th update (k = 0 … n)."""
  return final + (initial - final) * (1.0 - jnp.minimum(k, n) / n) ** 3


def _gmp_masks(student, masks, step, gmp):
  """At update steps t0 + k·Δt (k ≤ n): keep exactly the largest (1 − s_k) of each kernel."""
  t0, every, n, initial, final = gmp
  k = (step - t0) // every
  update = (step >= t0) & ((step - t0) % every == 0) & (k <= n)

  def recompute():
    keep = 1.0 - gmp_sparsity(k.astype(jnp.float32), n, initial, final)

    def one(w, m):
      flat = jnp.abs(w * m).reshape(-1)
      rank = jnp.argsort(jnp.argsort(-flat, stable=True), stable=True)
      return (rank < jnp.round(keep * flat.size)).reshape(w.shape)
    return jax.tree.map(one, student, masks)

  return jax.lax.cond(update, recompute, lambda: masks)


def train_step(state: TrainState, batch, aux, *, model, form, loss_cfg, tx, mean, std,
               augment, teacher_model=None, gmp=None) -> tuple[TrainState, dict]:
  """One optimizer step on one batch: pure in (state, batch, aux)."""
  key = jax.random.fold_in(state.rng, state.step)
  images = data.augment(key, batch["image"]) if augment else batch["image"]
  x = data.normalise(images, mean, std)
  teacher_logits = batch.get("teacher_logits")
  if teacher_logits is None and aux.get("teacher_variables") is not None:
    # Augmented data: the frozen teacher's targets must be computed on this very batch.
    teacher_logits, _ = _apply(teacher_model, aux["teacher_variables"], x, False, None)

  def loss_of(params):
    variables = {"params": blend_lib.model_params(form, state.alpha, params, state.masks),
                 **state.model_state}
    logits, new_model_state = _apply(model, variables, x, True, state.alpha)
    per_example, per_logit = losses.loss_fn(loss_cfg["kind"], logits, batch["label"],
                                            teacher_logits, target_var=aux.get("target_var"),
                                            **_loss_kwargs(loss_cfg))
    return jnp.mean(per_example), (logits, new_model_state, per_logit)

  (loss, (logits, new_model_state, per_logit)), grads = jax.value_and_grad(
      loss_of, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, masks=state.masks)
  metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
  if per_logit is not None:
    metrics["per_logit"] = jnp.mean(per_logit, 0)
  params, masks = optax.apply_updates(state.params, updates), state.masks
  if gmp is not None:  # gradual magnitude pruning: the masks follow the trained weights
    masks = _gmp_masks(params["student"], masks, state.step, gmp)
    params = {**params, "student": jax.tree.map(lambda w, m: w * m, params["student"], masks)}
  return state.replace(step=state.step + 1, params=params, masks=masks, opt_state=opt_state,
                       model_state={**state.model_state, **new_model_state}), metrics


def make_train_epoch(*, model, form, loss_cfg, tx, mean, std, augment, batch_size, seed,
                     stream, mesh, teacher_model=None, gmp=None) -> Callable:
  """jit(state, train_arrays, aux) → (state, epoch-mean metrics): one whole epoch."""
  step = functools.partial(train_step, model=model, form=form, loss_cfg=loss_cfg, tx=tx,
                           mean=mean, std=std, augment=augment, teacher_model=teacher_model,
                           gmp=gmp)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  def train_epoch(state, arrays, aux):
    n = arrays["label"].shape[0]
    steps = n // batch_size  # the remainder is dropped; the next epoch's order differs
    order = data.epoch_order(seed, state.epoch, n, stream)

    def body(state, i):
      idx = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
      batch = {k: jax.lax.with_sharding_constraint(v[idx], batch_sharding)
               for k, v in arrays.items()}
      return step(state, batch, aux)

    state, metrics = jax.lax.scan(body, state, jnp.arange(steps))
    metrics = jax.tree.map(lambda m: jnp.mean(m, 0), metrics)
    return state.replace(epoch=state.epoch + 1, stage_epoch=state.stage_epoch + 1), metrics

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Parameters and optimizer state stay replicated; only the batches are split on "data".
  return jax.jit(train_epoch, donate_argnums=0, out_shardings=replicated)


def make_evaluate(*, model, loss_cfg, mean, std, batch_size) -> Callable:
  """jit(variables, alpha, padded_arrays, aux) → {loss, accuracy, count} over every example once."""

  def evaluate(variables, alpha, arrays, aux):
    n = arrays["label"].shape[0]

    def body(totals, i):
      batch = {k: jax.lax.dynamic_slice_in_dim(v, i * batch_size, batch_size)
               for k, v in arrays.items()}
      logits, _ = _apply(model, variables, data.normalise(batch["image"], mean, std), False, alpha)
      per_example, _ = losses.loss_fn(loss_cfg["kind"], logits, batch["label"],
                                      batch.get("teacher_logits"),
                                      target_var=aux.get("target_var"), **_loss_kwargs(loss_cfg))
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      m = batch["mask"]
      return totals + jnp.stack([jnp.sum(per_example * m), jnp.sum(correct * m), jnp.sum(m)]), None

    totals, _ = jax.lax.scan(body, jnp.zeros(3), jnp.arange(n // batch_size))
    return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2], "count": totals[2]}

  return jax.jit(evaluate)


def make_logits(*, model, mean, std, batch_size) -> Callable:
  """jit(variables, padded_arrays) → logits of every (padded) example, eval mode."""

  def logits_of(variables, arrays):
    images = arrays["image"]
    batches = images.reshape((-1, batch_size) + images.shape[1:])
    out = jax.lax.map(lambda b: _apply(model, variables, data.normalise(b, mean, std),
                                       False, None)[0], batches)
    return out.reshape((-1, out.shape[-1]))

  return jax.jit(logits_of)


def state_variables(state: TrainState, form: str) -> dict:
  return {"params": blend_lib.model_params(form, state.alpha, state.params, state.masks),
          **state.model_state}


# ------------------------------------------------------------------ the run

class _Log:
  """metrics.jsonl, TensorBoard and the progress line."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    self.enabled = jax.process_index() == 0  # one writer in a multi-process run
    if not self.enabled:
      return
    try:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # TensorBoard logs are optional
      pass

  def rewrite(self, history):
    if not self.enabled:
      return
    with open(self.path, "w") as f:
      for record in history:
        f.write(json.dumps(record) + "\n")

  def append(self, record, index):
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "alpha"):
        self.tb.add_scalar(f"{record['phase']}/{key}", record[key], index)
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


def _print(msg):
  if jax.process_index() == 0:
    print(msg, flush=True)


def maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize()` when ALPHAPRUNE_DISTRIBUTED=1 (TPU pods, SLURM, …).

  On TPU VMs and under SLURM JAX finds the coordinator itself. Elsewhere set
  ALPHAPRUNE_COORDINATOR (host:port), ALPHAPRUNE_NUM_PROCESSES and
  ALPHAPRUNE_PROCESS_ID. On CPU the collectives go through gloo.
  """
  if os.environ.get("ALPHAPRUNE_DISTRIBUTED", "0") != "1":
    return
  kwargs = {}
  if "ALPHAPRUNE_COORDINATOR" in os.environ:
    kwargs = dict(coordinator_address=os.environ["ALPHAPRUNE_COORDINATOR"],
                  num_processes=int(os.environ["ALPHAPRUNE_NUM_PROCESSES"]),
                  process_id=int(os.environ["ALPHAPRUNE_PROCESS_ID"]))
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def _pad_eval(arrays, batch_size, mesh):
  return data.put_replicated(data.pad_for_eval(arrays, batch_size), mesh)


class _Run:
  """Everything one run needs, built once from (config, workdir)."""

  def __init__(self, config, workdir, dataset, mesh):
    self.c, self.workdir, self.ds, self.mesh = config, workdir, dataset, mesh
    self.form = config.blend.form
    self.plain = models.make_model(config.model, dataset.num_classes)
    self.model = models.make_model(config.model, dataset.num_classes, self.form)
    self.train = data.put_replicated(dataset.train, mesh)
    eb = config.data.eval_batch_size
    self.val = _pad_eval(dataset.val, eb, mesh)
    self.test = _pad_eval(dataset.test, eb, mesh)
    self.log = _Log(workdir)
    self.history: list[dict] = []

  # -- phases

  def train_phase(self, state, stages, opt, epoch_fn, eval_fn, train_arrays, val_arrays,
                  aux, ckpt, form):
    """Trains `stages` [(phase, alpha, max_epochs)] from wherever `state` stands."""
    every = self.c.checkpoint.every_epochs
    observe = jax.jit(lambda s, v: _observe(opt, s, v))
    start = jax.jit(lambda s, a: s.replace(
        alpha=a, cuts=jnp.zeros_like(s.cuts),
        opt_state=opt_lib.reset_stage(opt, s.opt_state, s.params, self.c.train.reset_momentum)))
    while int(state.stage) < len(stages):
      k = int(state.stage)
      phase, alpha, max_epochs = stages[k]
      if int(state.stage_epoch) == 0:
        state = start(state, jnp.float32(alpha))
      t0 = time.time()
      lr = opt.learning_rate * float(opt_lib.lr_scale(state.opt_state))
      state, train_m = epoch_fn(state, train_arrays, aux)
      val_m = eval_fn(state_variables(state, form), state.alpha, val_arrays, aux)
      train_loss, val_loss = float(train_m["loss"]), float(val_m["loss"])
      epoch = int(state.epoch)
      if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise NonFiniteLoss(
            f"non-finite loss (train {train_loss}, validation {val_loss}) in phase {phase}, "
            f"stage {k}, epoch {epoch}; the last good checkpoint is in {ckpt.directory}")
      state = observe(state, val_m["loss"])
      stage_done = (int(state.stage_epoch) >= max_epochs or
                    0 < self.c.train.advance_after_cuts <= int(state.cuts))
      if stage_done:
        state = state.replace(stage=state.stage + 1, stage_epoch=jnp.zeros_like(state.stage_epoch))
      seconds = time.time() - t0
      record = {"phase": phase, "stage": k, "alpha": float(alpha), "epoch": epoch, "lr": lr,
                "train_loss": train_loss, "train_accuracy": float(train_m["accuracy"]),
                "val_loss": val_loss, "val_accuracy": float(val_m["accuracy"]),
                "seconds": seconds, "stage_end": stage_done}
      if "per_logit" in train_m:
        record["train_per_logit_mse"] = [float(v) for v in np.asarray(train_m["per_logit"])]
      self.history.append(record)
      if stage_done or epoch % every == 0:
        ckpt.save(epoch, state, {"history": self.history}, stage_end=stage_done)
      self.log.append(record, len(self.history))
      left = (max_epochs - int(state.stage_epoch)) * seconds if not stage_done else 0.0
      _print(f"[{record['phase']}] stage {k + 1}/{len(stages)} α={alpha:.3f} "
             f"epoch {epoch} lr={lr:.2e} train_loss={train_loss:.4f} "
             f"val_loss={val_loss:.4f} val_acc={record['val_accuracy']:.4f} "
             f"({seconds:.1f}s/epoch, ≤{left:.0f}s left in stage)")
    return state

  def resume(self, phase, state):
    """(state, checkpoints) of a phase: the latest readable checkpoint, else `state`, saved."""
    ckpt = checkpoint.RunCheckpoints(os.path.join(self.workdir, "checkpoints", phase),
                                     self.c.checkpoint.keep)
    restored = ckpt.restore_latest(state)
    if restored:
      state, meta = restored
      self.history = meta["history"]
      self.log.rewrite(self.history)
      _print(f"resumed {phase} at stage {int(state.stage)}, epoch {int(state.epoch)}")
    else:
      ckpt.save(0, state, {"history": self.history})
    return state, ckpt

  # -- pretraining

  def teacher(self):
    """The dense teacher's variables: given, already pretrained here, or pretrained now."""
    c = self.c
    if c.teacher.checkpoint:
      variables, _ = checkpoint.load_model(c.teacher.checkpoint, self._abstract_variables())
      return variables, []
    path = os.path.join(self.workdir, "teacher")
    if os.path.exists(os.path.join(path, "model.json")):
      variables, meta = checkpoint.load_model(path, self._abstract_variables())
      return variables, meta.get("history", [])
    variables = self.plain.init(jax.random.PRNGKey(c.seed), jnp.zeros((1,) + self.ds.image_shape))
    variables = jax.tree.map(jnp.asarray, variables)
    params = variables.pop("params")
    ones = jax.tree.map(lambda w: np.ones(w.shape, bool),
                        tree.subset(params, masks_lib.prunable_paths(params)))
    kernels, rest = blend_lib.split(params, ones)
    opt = opt_lib.make_optimizer(
        optimizer=c.teacher.optimizer, learning_rate=c.teacher.learning_rate,
        momentum=c.train.momentum, **c.train.plateau)
    pre = {"teacher": {}, "student": kernels, "shared": rest}
    state = data.put_replicated(init_state(pre, dict(variables), ones, opt.tx, c.seed), self.mesh)
    state, ckpt = self.resume("pretrain", state)
    cls = dict(c.loss, kind="classification")
    epoch_fn = make_train_epoch(model=self.plain, form="layer", loss_cfg=cls, tx=opt.tx,
                                mean=self.ds.mean, std=self.ds.std, augment=self.ds.augment,
                                batch_size=c.data.batch_size, seed=c.seed,
                                stream=PHASES["pretrain"], mesh=self.mesh)
    eval_fn = make_evaluate(model=self.plain, loss_cfg=cls, mean=self.ds.mean, std=self.ds.std,
                            batch_size=c.data.eval_batch_size)
    state = self.train_phase(state, [("pretrain", 0.0, c.teacher.epochs)], opt, epoch_fn,
                             eval_fn, self.train, self.val, {}, ckpt, "layer")
    ckpt.close()
    variables = blend_lib.export_variables("layer", state.params, state.model_state, state.masks)
    variables = jax.device_get(variables)
    checkpoint.save_model(path, variables, {"model": c.model.to_dict(),
                                            "num_classes": self.ds.num_classes,
                                            "history": self.history})
    return variables, self.history

  def _abstract_variables(self, model=None):
    shapes = jax.eval_shape((model or self.plain).init, jax.random.PRNGKey(0),
                            jnp.zeros((1,) + self.ds.image_shape))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def initial_params(method, form, key, teacher_vars, masks, student_init, plain, image_shape):
  """(params, model_state, masks) a method starts its pruning phase from.

  alpha_blend: teacher + He-initialised student. one_shot: the masked teacher
  alone. scratch and distill: a freshly initialised network, masked (they
  never read the teacher's weights). gmp: the dense teacher, masks all ones.
  """
  if method == "alpha_blend":
    return blend_lib.init_params(form, key, teacher_vars, masks, student_init)
  if method in ("scratch", "distill"):
    fresh = dict(plain.init(jax.random.fold_in(key, 1), jnp.zeros((1,) + image_shape)))
    kernels, rest = blend_lib.split(fresh.pop("params"), masks)
    student = blend_lib.init_student(key, kernels, masks, student_init)
    return {"teacher": {}, "student": student, "shared": rest}, fresh, masks
  variables = dict(teacher_vars)
  kernels, rest = blend_lib.split(variables.pop("params"), masks)
  if method == "one_shot":
    student = blend_lib.init_student(key, kernels, masks, "copy")
    return {"teacher": {}, "student": student, "shared": rest}, variables, masks
  if method == "gmp":
    ones = jax.tree.map(lambda m: np.ones(np.shape(m), bool), masks)
    return {"teacher": {}, "student": kernels, "shared": rest}, variables, ones
  raise ValueError(f"unknown method {method!r}")


def _observe(opt, state: TrainState, val_loss):
  before = opt_lib.lr_scale(state.opt_state)
  opt_state = opt_lib.observe_validation_loss(opt, state.opt_state, val_loss)
  cut = opt_lib.lr_scale(opt_state) < before
  return state.replace(opt_state=opt_state, cuts=state.cuts + cut.astype(state.cuts.dtype))


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D ("data",) mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_workdir(config, workdir):
  """Refuses a workdir whose saved config differs from `config` in an unsafe key."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  unsafe = [k for k in changed_keys(saved, current) if k not in SAFE_TO_CHANGE]
  if unsafe:
    raise ConfigError(f"{workdir} holds a run with a different config ({', '.join(unsafe)}); "
                      "use a new --workdir or the saved config")


def check_teacher(config, model, image_shape):
  """A given teacher checkpoint must exist and match the model's shapes."""
  path = config.teacher.checkpoint
  if not path:
    return
  if not os.path.exists(os.path.join(path, "variables")):
    raise ConfigError(f"teacher.checkpoint={path} is not a saved model (no {path}/variables); "
                      "point it at the teacher/ or export/ folder of an earlier run")
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + image_shape))
  want = {jax.tree_util.keystr(p): tuple(s.shape)
          for p, s in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = checkpoint.model_shapes(path)
  if want != got:
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:3]
    raise ConfigError(f"teacher.checkpoint={path} does not fit model {config.model.name} "
                      f"(e.g. {diff[0]}: {got.get(diff[0])} vs {want.get(diff[0])}); "
                      "use a checkpoint of the same model and dataset")


def _target_var(target, train_teacher_logits, labels, num_classes):
  """Per-logit variance of the regression targets over the training set (per_logit reduction)."""
  if target == "teacher":
    return np.var(train_teacher_logits, axis=0) + 1e-8
  p = np.bincount(labels, minlength=num_classes) / len(labels)
  return p * (1 - p) + 1e-8


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The whole pipeline; returns the summary (also written to workdir/summary.json)."""
  t_start = time.time()
  validate(config, jax.device_count())
  dataset = data.load(config.data.name, data_dir=config.data.data_dir or None,
                      manual_dir=config.data.manual_dir or None,
                      val_fraction=config.data.val_fraction, seed=config.seed,
                      download=config.data.download)
  plain = models.make_model(config.model, dataset.num_classes)
  check_teacher(config, plain, dataset.image_shape)
  check_workdir(config, workdir)
  alphas = schedule_of(config)
  # Everything is known to be valid: only now is the workdir written.
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  _print(schedules.describe(alphas))

  mesh = make_mesh()
  r = _Run(config, workdir, dataset, mesh)
  c = config
  teacher_vars, _ = r.teacher()
  teacher_vars = data.put_replicated(jax.device_get(teacher_vars), mesh)

  # Targets from the frozen teacher: computed once where the data are not augmented.
  eb = c.data.eval_batch_size
  loss_cfg = dict(c.loss, kind="distillation" if c.method == "distill" else c.loss.kind)
  cls_cfg = dict(c.loss, kind="classification")
  logits_fn = make_logits(model=r.plain, mean=dataset.mean, std=dataset.std, batch_size=eb)
  aux: dict = {}
  train_arrays, val_arrays, test_arrays = r.train, r.val, r.test
  per_logit = loss_cfg["kind"] == "regression" and c.loss.reduction == "per_logit"
  train_logits = None
  if losses.needs_teacher_logits(loss_cfg["kind"], c.loss.target):
    val_arrays = {**r.val, "teacher_logits": logits_fn(teacher_vars, r.val)}
    test_arrays = {**r.test, "teacher_logits": logits_fn(teacher_vars, r.test)}
    if per_logit or not dataset.augment:  # augmented batches get their targets per step
      n = len(dataset.train["label"])
      train_logits = logits_fn(teacher_vars, _pad_eval(dataset.train, eb, mesh))[:n]
    if dataset.augment:
      aux["teacher_variables"] = teacher_vars
    else:
      train_arrays = {**r.train, "teacher_logits": train_logits}
  if per_logit:
    aux["target_var"] = jnp.asarray(_target_var(
        c.loss.target, None if train_logits is None else np.asarray(train_logits),
        dataset.train["label"], dataset.num_classes), jnp.float32)

  # The teacher at α = 1: the starting point, evaluated, never trained.
  eval_cls = make_evaluate(model=r.plain, loss_cfg=cls_cfg, mean=dataset.mean, std=dataset.std,
                           batch_size=eb)
  teacher_val = eval_cls(teacher_vars, None, r.val, {})
  teacher_test = eval_cls(teacher_vars, None, r.test, {})
  _print(f"teacher: val_acc={float(teacher_val['accuracy']):.4f} "
         f"test_acc={float(teacher_test['accuracy']):.4f}")

  # Masks, chosen once from the teacher's weights.
  groups = r.plain.channel_groups() if c.prune.structure == "filter" else None
  masks = masks_lib.compute_masks(
      teacher_vars["params"], keep_ratio=c.prune.keep_ratio, criterion=c.prune.criterion,
      scope=c.prune.scope, structure=c.prune.structure, n=c.prune.n, m=c.prune.m,
      include=c.prune.include, exclude=c.prune.exclude, groups=groups,
      key=jax.random.fold_in(jax.random.PRNGKey(c.seed), 0x3A5C))
  counts = masks_lib.param_counts(teacher_vars["params"], masks)
  _print(f"masks: {counts['kept_prunable_params']}/{counts['prunable_params']} prunable weights "
         f"kept ({counts['kept_prunable_params'] / counts['prunable_params']:.4f}); "
         f"{counts['params_total_after']}/{counts['params_total_before']} parameters in all")

  opt = opt_lib.make_optimizer(optimizer=c.train.optimizer, learning_rate=c.train.learning_rate,
                               momentum=c.train.momentum, teacher_trainable=c.teacher.trainable,
                               **c.train.plateau)
  form = r.form if c.method == "alpha_blend" else "layer"
  params, model_state, blend_masks = initial_params(
      c.method, form, jax.random.fold_in(jax.random.PRNGKey(c.seed), 0x57D),
      jax.device_get(teacher_vars), masks, c.prune.init, r.plain, dataset.image_shape)
  state = data.put_replicated(init_state(params, model_state, blend_masks, opt.tx, c.seed), mesh)
  state, ckpt = r.resume("prune", state)

  # Every method gets the α-run's budget: len(alphas) × max_epochs_per_stage, then fine-tuning.
  budget = len(alphas) * c.train.max_epochs_per_stage
  if c.method == "alpha_blend":
    stages = [("prune", a, c.train.max_epochs_per_stage) for a in alphas]
  else:  # the pruned network alone (α = 0) for the same number of epochs
    stages = [("prune", 0.0, budget)]
  if c.train.finetune_epochs:
    stages.append(("finetune", 0.0, c.train.finetune_epochs))
  gmp = None
  if c.method == "gmp":
    steps_per_epoch = len(dataset.train["label"]) // c.data.batch_size
    every = c.gmp.update_every
    n = max(1, int(c.gmp.prune_fraction * budget * steps_per_epoch) // every)
    gmp = (0, every, n, float(c.gmp.initial_sparsity), 1.0 - float(c.prune.keep_ratio))
    _print(f"gmp: {n} mask updates every {every} steps, sparsity "
           f"{gmp[3]:.2f} → {gmp[4]:.2f}, then fine-tuning at the final sparsity")
  model = r.model if form == r.form else r.plain
  epoch_fn = make_train_epoch(model=model, form=form, loss_cfg=loss_cfg, tx=opt.tx,
                              mean=dataset.mean, std=dataset.std, augment=dataset.augment,
                              batch_size=c.data.batch_size, seed=c.seed, stream=PHASES["prune"],
                              mesh=mesh, teacher_model=r.plain, gmp=gmp)
  eval_fn = make_evaluate(model=model, loss_cfg=loss_cfg, mean=dataset.mean,
                          std=dataset.std, batch_size=eb)
  state = r.train_phase(state, stages, opt, epoch_fn, eval_fn, train_arrays, val_arrays, aux,
                        ckpt, form)
  ckpt.close()
  r.train_epoch_compilations = epoch_fn._cache_size()

  # The blended model at α = 0, then the pruned network alone, saved and reloaded.
  blended_test = eval_fn(state_variables(state, form), jnp.float32(0.0), test_arrays, aux)
  exported = jax.device_get(blend_lib.export_variables(form, state.params, state.model_state,
                                                       state.masks))
  # The masks the model ends with (gmp chose its own while training).
  layer_masks = jax.device_get(masks) if c.method != "gmp" else jax.device_get(state.masks)
  counts = masks_lib.param_counts(teacher_vars["params"], layer_masks)
  export_dir = os.path.join(workdir, "export")
  export_model, model_cfg = r.plain, c.model.to_dict()
  coupled = groups is not None and all(
      p in tree.flatten(layer_masks) for prods, cons in groups for p in (*prods, *cons))
  if c.prune.structure == "filter" and coupled:
    fields, exported = compact.compact_variables(r.plain, exported, layer_masks)
    model_cfg = {**model_cfg, **fields}
    export_model = models.make_model(model_cfg, dataset.num_classes)
    counts["params_total_after"] = tree.count(exported["params"])
    speedup = ("a smaller dense network: pruned channels are cut out (see compact_speedup_* "
               "in python -m alphaprune.bench)")
  else:
    speedup = ("none: the pruned weights are zeros inside dense kernels; the export has the "
               "teacher's shapes and runs exactly as fast")
  checkpoint.save_model(export_dir, exported, {
      "model": model_cfg, "num_classes": dataset.num_classes,
      "image_shape": list(dataset.image_shape), "mean": list(dataset.mean),
      "std": list(dataset.std), "structure": c.prune.structure, **counts,
      "compact": export_model is not r.plain,
      "sparsity_per_layer": masks_lib.sparsity_per_layer(layer_masks), "speedup": speedup})
  reloaded, _ = checkpoint.load_model(export_dir, r._abstract_variables(export_model))
  reloaded = data.put_replicated(reloaded, mesh)
  eval_export = make_evaluate(model=export_model, loss_cfg=cls_cfg, mean=dataset.mean,
                              std=dataset.std, batch_size=eb)
  pruned_test = eval_export(reloaded, None, r.test, {})
  pruned_val = eval_export(reloaded, None, r.val, {})

  prune_epochs = [h for h in r.history if h["phase"] in ("prune", "finetune")]
  summary = {
      "method": c.method,
      "teacher_test_accuracy": float(teacher_test["accuracy"]),
      "pruned_test_accuracy": float(pruned_test["accuracy"]),
      "keep_ratio": float(c.prune.keep_ratio),
      "keep_ratio_measured": counts["kept_prunable_params"] / counts["prunable_params"],
      **counts,
      "alphas": alphas,
      "epochs_total": len(prune_epochs),
      "wall_seconds": time.time() - t_start,
      "teacher_val_accuracy": float(teacher_val["accuracy"]),
      "pruned_val_accuracy": float(pruned_val["accuracy"]),
      "blended_alpha0_test_accuracy": float(blended_test["accuracy"]),
      "dataset": c.data.name, "model": c.model.name, "structure": c.prune.structure,
      "loss": loss_cfg["kind"], "blend_form": form, "seed": c.seed,
      "train_epoch_compilations": r.train_epoch_compilations,
  }
  r.log.close()
  if not primary:
    return summary
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  if c.report.enabled:
    from alphaprune import report
    report.write_report(workdir)
  _print(f"done: teacher test accuracy {summary['teacher_test_accuracy']:.4f}, pruned "
         f"{summary['pruned_test_accuracy']:.4f} with {counts['params_total_after']}/"
         f"{counts['params_total_before']} parameters ({summary['wall_seconds']:.0f}s)")
  return summary
