"""The main job, as the pipeline of DESIGN §2:

    validate → data → teacher → masks → stages → export → evaluate → summary → report

`run(config, workdir)` reads top to bottom as that list, one named call a
step; each takes values and returns values. The jitted work is in `steps`,
each method's starting point and stages in `methods`, placement in `devices`,
the run's files in `workdir` and `checkpoint`, the pruned model in `export`.

Data reach the step by one of two pipelines (`data.pipeline`): `device` holds
every split on the mesh and trains an epoch as one compiled scan; `stream`
feeds batches from the host through Grain (`stream.Feed`), for datasets larger
than a device. Both call the same pure step on the same batches in the same
order.

Resume order: the latest readable checkpoint of a phase in the workdir, else
the teacher (`teacher.checkpoint`, or pretrained here and saved in
workdir/teacher), else scratch. Data order comes from (seed, phase, epoch),
randomness from fold_in(rng, step), and a streamed checkpoint holds the Grain
iterator's position and the epoch's running metric sums, so a run resumed at an
epoch end or in the middle of one ends bit-identical to an uninterrupted one.
SIGTERM (preemption) saves at the next step boundary (streamed) or epoch end
(on device) and stops the run. The metrics history is a value: each phase's
checkpoints carry all of it, pretraining included, and metrics.jsonl is
rewritten from it on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alphaprune import blending, checkpoint, data, devices, export, losses, masks as masks_lib
from alphaprune import methods, models, rngs, schedules, steps, stream, tree
from alphaprune import workdir as workdir_lib
from alphaprune import optimizer as opt_lib
from alphaprune.config import ConfigError, check_pipeline, schedule_of, validate


class NonFiniteLoss(RuntimeError):
  pass


class Preempted(Exception):
  """SIGTERM arrived; the run saved a checkpoint and stops (exit code 0)."""


class Splits(NamedTuple):
  """Arrays on the mesh; val and test padded for evaluation (with a 0/1 `mask`)."""

  train: dict
  val: dict
  test: dict


class Run(NamedTuple):
  """What every step of one run reads and never changes: its settings, data and devices.
  On the device pipeline `dataset` and `splits` hold the data; streamed, `feed` reads it."""

  config: ml_collections.ConfigDict
  workdir: str
  source: data.Source
  plain: models.nn.Module  # the dense model the config names
  mesh: jax.sharding.Mesh
  log: workdir_lib.Log
  dataset: data.Dataset | None = None
  splits: Splits | None = None
  feed: stream.Feed | None = None


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase: what its epochs run on, and where they are recorded."""

  name: str  # "pretrain" | "prune": its checkpoint folder and data-order stream
  cfg: steps.StepConfig
  opt: opt_lib.Optimizer
  splits: Splits | None  # on device, with the teacher's logits where the loss needs them
  feed: stream.Feed | None  # streamed
  batches: Any  # streamed: the phase's Grain iterator (its state is checkpointed)
  aux: dict
  checkpoints: checkpoint.RunCheckpoints
  log: workdir_lib.Log
  every_epochs: int = 1
  every_steps: int = 0
  advance_after_cuts: int = 0
  reset_momentum: bool = False


def _print(msg: str) -> None:
  if devices.is_primary():
    print(msg, flush=True)


# ------------------------------------------------------------------ the pipeline

def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The whole pipeline; returns the summary (also written to workdir/summary.json)."""
  t_start = time.time()
  source, pipeline, plain, alphas = preflight(config, workdir)
  with workdir_lib.lock(workdir), sigterm_saves_and_stops():  # nothing written before this
    workdir_lib.write_config(config, workdir)
    check_platform(config)
    _print(schedules.describe(alphas))
    r = start(config, workdir, source, pipeline, plain)
    teacher, history = teacher_variables(r)
    teacher_acc = evaluate_teacher(r, teacher)
    masks = choose_masks(config, teacher["params"], plain)
    phase, state, stages = prune_phase(r, teacher, masks, alphas)
    state, history, partial = resume(phase, state, history)
    with steps.count_compilations("train_epoch") as compiled:
      state, history = train_stages(state, stages, history, phase, partial)
    close(phase)
    workdir_lib.close(r.log)
    pruned = export_and_evaluate(r, phase, state, masks, teacher["params"])
    summary = summarise(config, alphas, history, teacher_acc, pruned, compiled["count"],
                        time.time() - t_start)
    finish(config, workdir, summary)
  return summary


def preflight(config, workdir) -> tuple[data.Source, str, models.nn.Module, list[float]]:
  """Everything that can be wrong, found before anything is written: raises ConfigError
  or DataError (one line each); returns (the data source, its pipeline, the plain model,
  the α-schedule)."""
  validate(config, jax.device_count())
  workdir_lib.check_free(workdir)
  workdir_lib.check_config(config, workdir)
  d = config.data
  source = data.open_source(d.name, data_dir=d.data_dir or None, manual_dir=d.manual_dir or None,
                            val_fraction=d.val_fraction, seed=config.seed, download=d.download,
                            max_examples=d.max_examples, image_size=d.image_size,
                            augment=d.augment)
  pipeline = choose_pipeline(config, source)
  plain = models.make_model(config.model, source.num_classes)
  check_teacher(config, plain, source.image_shape)
  return source, pipeline, plain, schedule_of(config)


def choose_pipeline(config, source: data.Source) -> str:
  """`data.pipeline`, with `auto` resolved: the device pipeline when every split fits in a
  quarter of one device's memory and needs no host-side augmentation."""
  d = config.data
  fits = 0 <= source.bytes_in_memory() <= devices.memory_bytes() // 4
  on_host = source.augment == "inception_crop_flip"
  if d.pipeline == "device" and None in source.stored_shape[:2]:
    raise ConfigError(f"{source.name}'s images vary in size and cannot be held on the "
                      "device; use data.pipeline=stream (or auto)")
  if d.pipeline != "auto":
    return d.pipeline
  pipeline = "device" if fits and not on_host else "stream"
  check_pipeline(config, pipeline)
  return pipeline


def check_platform(config) -> None:
  """Says where the run trains; warns when a config sized for a GPU or TPU finds only a CPU
  (a plain `pip install` brings a CPU-only jaxlib)."""
  backend = jax.default_backend()
  _print(f"platform: {backend}, {jax.device_count()} device(s) in {jax.process_count()} "
         "process(es)")
  if config.sized_for == "accelerator" and backend == "cpu" and devices.is_primary():
    print("warning: this config is sized for a GPU or TPU (sized_for=accelerator) but JAX "
          "found only the CPU; on a GPU or TPU machine install with pip install -e '.[cuda]' "
          "or -e '.[tpu]', or run a smoke variant", file=sys.stderr, flush=True)


def check_teacher(config, model, image_shape) -> None:
  """A given teacher checkpoint must exist and match the model's shapes."""
  path = config.teacher.checkpoint
  if not path:
    return
  if checkpoint.variables_dir(path) is None:
    raise ConfigError(f"teacher.checkpoint={path} is not a saved model (neither an orbax "
                      f"checkpoint nor a folder with one in variables/); point it at the "
                      "teacher/ or export/ folder of an earlier run, or at an orbax save of "
                      "your model's variables")
  want = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in
          jax.tree_util.tree_flatten_with_path(export.abstract_variables(model, image_shape))[0]}
  got = checkpoint.model_shapes(path)
  if want != got:
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:3]
    raise ConfigError(f"teacher.checkpoint={path} does not fit model {config.model.name} "
                      f"(e.g. {diff[0]}: {got.get(diff[0])} vs {want.get(diff[0])}); "
                      "use a checkpoint of the same model and dataset")


def start(config, workdir, source: data.Source, pipeline: str, plain) -> Run:
  """The run's mesh, log and data: every split placed on the mesh, or a feed that streams."""
  mesh = devices.make_mesh()
  r = Run(config, workdir, source, plain, mesh, workdir_lib.open_log(workdir))
  d = config.data
  _print(f"data: {source.name}, {source.num_examples('train')} train / "
         f"{source.num_examples('val')} validation / {source.num_examples('test')} test "
         f"examples, {pipeline} pipeline")
  if pipeline == "stream":
    return r._replace(feed=stream.Feed(source, d.batch_size, d.eval_batch_size, config.seed,
                                       mesh, d.workers, d.read_threads, d.prefetch))
  dataset = data.to_memory(source)
  return r._replace(dataset=dataset, splits=place(dataset, d.eval_batch_size, mesh))


def place(dataset: data.Dataset, eval_batch_size: int, mesh) -> Splits:
  pad = lambda arrays: data.pad_for_eval(arrays, eval_batch_size)
  return Splits(devices.put_replicated(dataset.train, mesh),
                devices.put_replicated(pad(dataset.val), mesh),
                devices.put_replicated(pad(dataset.test), mesh))


def step_config(r: Run, model, **fields) -> steps.StepConfig:
  """The run-wide static settings of a step, an epoch or an evaluation of `model`."""
  return steps.StepConfig(model=model, loss=fields.pop("loss", losses.Loss()),
                          mean=r.source.mean, std=r.source.std, mesh=r.mesh,
                          augment=r.dataset is not None and r.dataset.augment,
                          batch_size=r.config.data.batch_size,
                          eval_batch_size=r.config.data.eval_batch_size, seed=r.config.seed,
                          **fields)


# ------------------------------------------------------------------ teacher

def teacher_variables(r: Run) -> tuple[dict, list]:
  """(the dense teacher's variables, its pretraining epochs): given by teacher.checkpoint,
  pretrained here by an earlier attempt (workdir/teacher), or pretrained now."""
  if r.config.teacher.checkpoint:
    variables, _ = export.load(r.config.teacher.checkpoint, r.plain, r.source.image_shape)
    return devices.put_replicated(variables, r.mesh), []
  path = os.path.join(r.workdir, "teacher")
  if not os.path.exists(os.path.join(path, "model.json")):
    variables, history = pretrain(r)
    checkpoint.save_model(path, variables, {"model": r.config.model.to_dict(),
                                            "num_classes": r.source.num_classes,
                                            "history": history})
  variables, meta = export.load(path, r.plain, r.source.image_shape)
  return devices.put_replicated(variables, r.mesh), meta["history"]


def pretrain(r: Run) -> tuple[dict, list]:
  """Dense training of the teacher: every kernel trainable, nothing masked."""
  c = r.config
  variables = dict(r.plain.init(jax.random.PRNGKey(c.seed),
                                jnp.zeros((1,) + r.source.image_shape)))
  params = variables.pop("params")
  ones = jax.tree.map(lambda w: np.ones(w.shape, bool),
                      tree.subset(params, masks_lib.prunable_paths(params)))
  kernels, rest = blending.split(params, ones)
  opt = opt_lib.make_optimizer(optimizer=c.teacher.optimizer,
                               learning_rate=c.teacher.learning_rate, momentum=c.train.momentum,
                               **c.train.plateau)
  state = devices.put_replicated(steps.init_state(
      {"teacher": {}, "student": kernels, "shared": rest}, variables, ones, opt.tx, c.seed), r.mesh)
  cfg = step_config(r, r.plain, tx=opt.tx, stream=rngs.DATA_STREAMS["pretrain"])
  stages = [methods.Stage("pretrain", 0.0, c.teacher.epochs)]
  phase = make_phase(r, "pretrain", cfg, opt, r.splits, {}, stages)
  state, history, partial = resume(phase, state, [])
  state, history = train_stages(state, stages, history, phase, partial)
  close(phase)
  return jax.device_get(blending.export_variables(
      "layer", state.params, state.model_state, state.masks)), history


def evaluate(where: Run | Phase, split: str, variables, alpha, aux: dict,
             cfg: steps.StepConfig) -> dict:
  """{loss, accuracy, count} of `split` on either pipeline (a phase's splits carry the
  teacher's logits where its loss needs them)."""
  if where.feed is None:
    return steps.evaluate(variables, alpha, getattr(where.splits, split), aux, cfg)
  return steps.evaluate_stream(variables, alpha, where.feed.eval_batches(split), aux, cfg)


def accuracies(r: Run, model, variables) -> dict:
  """{"val", "test"}: the accuracy of a plain (unblended) network on both splits."""
  cfg = step_config(r, model)
  return {split: float(evaluate(r, split, variables, None, {}, cfg)["accuracy"])
          for split in ("val", "test")}


def evaluate_teacher(r: Run, teacher) -> dict:
  """The teacher at α = 1: the starting point, evaluated, never trained."""
  accuracy = accuracies(r, r.plain, teacher)
  _print(f"teacher: val_acc={accuracy['val']:.4f} test_acc={accuracy['test']:.4f}")
  return accuracy


# ------------------------------------------------------------------ masks

def choose_masks(config, teacher_params, plain) -> dict:
  """Fixed masks over the prunable kernels, chosen once from the teacher's weights."""
  p = config.prune
  masks = masks_lib.compute_masks(
      jax.device_get(teacher_params), keep_ratio=p.keep_ratio, criterion=p.criterion,
      scope=p.scope, structure=p.structure, n=p.n, m=p.m, include=p.include, exclude=p.exclude,
      groups=plain.channel_groups() if p.structure == "filter" else None,
      key=rngs.key(config.seed, rngs.MASKS))
  counts = masks_lib.param_counts(teacher_params, masks)
  for path, mask in tree.flatten(masks).items():
    _print(f"  prunable {path} {'×'.join(map(str, np.shape(mask)))}: "
           f"{int(np.sum(mask))}/{np.size(mask)} kept")
  _print(f"masks: {counts['kept_prunable_params']}/{counts['prunable_params']} prunable weights "
         f"kept ({counts['kept_prunable_params'] / counts['prunable_params']:.4f}); "
         f"{counts['params_total_after']}/{counts['params_total_before']} parameters in all")
  return masks


# ------------------------------------------------------------------ the α-stages

def run_loss(config) -> losses.Loss:
  kind = "distillation" if config.method == "distill" else config.loss.kind
  return losses.Loss(**{**config.loss.to_dict(), "kind": kind})


def prune_phase(r: Run, teacher, masks,
                alphas) -> tuple[Phase, steps.TrainState, list[methods.Stage]]:
  """The method's starting state, the phase it trains in, and its stages."""
  c = r.config
  form = {"alpha_blend": c.blend.form, "soft": "soft"}.get(c.method, "layer")
  loss = run_loss(c)
  targets, aux = teacher_targets(loss, r, teacher, step_config(r, r.plain))
  key = rngs.key(c.seed, rngs.STUDENT)
  fresh = (r.plain.init(jax.random.fold_in(key, 1), jnp.zeros((1,) + r.source.image_shape))
           if c.method in ("scratch", "distill") else None)
  params, model_state, start_masks = methods.initial_params(
      c.method, form, key, jax.device_get(teacher), masks, c.prune.init, fresh_vars=fresh)
  opt = opt_lib.make_optimizer(optimizer=c.train.optimizer, learning_rate=c.train.learning_rate,
                               momentum=c.train.momentum, teacher_trainable=c.teacher.trainable,
                               pruned_fixed=c.method != "soft", **c.train.plateau)
  state = devices.put_replicated(steps.init_state(params, model_state, start_masks, opt.tx,
                                                  c.seed), r.mesh)
  stages = methods.stages(c.method, alphas, c.train.max_epochs_per_stage,
                          c.train.finetune_epochs)
  gmp = gmp_of(c, r.source.num_examples("train"), len(alphas)) if c.method == "gmp" else None
  model = models.make_model(c.model, r.source.num_classes, "block" if form == "block" else "layer")
  cfg = step_config(r, model, form=form,
                    loss=loss, tx=opt.tx, stream=rngs.DATA_STREAMS["prune"],
                    teacher_model=r.plain, gmp=gmp)
  return make_phase(r, "prune", cfg, opt, targets, aux, stages), state, stages


def gmp_of(config, num_train: int, num_stages: int) -> methods.GmpSettings:
  budget_steps = num_stages * config.train.max_epochs_per_stage * (
      num_train // config.data.batch_size)
  gmp = methods.gmp_settings(config.gmp.update_every, config.gmp.prune_fraction,
                             config.gmp.initial_sparsity, config.prune.keep_ratio, budget_steps)
  _print(f"gmp: {gmp.updates} mask updates every {gmp.every} steps, sparsity "
         f"{gmp.initial_sparsity:.2f} → {gmp.final_sparsity:.2f}, then fine-tuning at the "
         "final sparsity")
  return gmp


def close(phase: Phase) -> None:
  """Ends a phase's checkpointing and its Grain reader (and any worker processes)."""
  phase.checkpoints.close()
  if phase.batches is not None:
    phase.batches.close()


def make_phase(r: Run, name, cfg, opt, splits, aux, stages) -> Phase:
  c = r.config
  batches = None
  if r.feed is not None:
    batches = r.feed.train_iterator(cfg.stream, sum(s.max_epochs for s in stages))
  return Phase(name=name, cfg=cfg, opt=opt, splits=splits, feed=r.feed, batches=batches,
               aux=aux, log=r.log,
               checkpoints=checkpoint.RunCheckpoints(
                   os.path.join(r.workdir, "checkpoints", name), c.checkpoint.keep),
               every_epochs=c.checkpoint.every_epochs, every_steps=c.checkpoint.every_steps,
               advance_after_cuts=c.train.advance_after_cuts,
               reset_momentum=c.train.reset_momentum)


def teacher_targets(loss: losses.Loss, r: Run, teacher,
                    cfg: steps.StepConfig) -> tuple[Splits | None, dict]:
  """The splits with the frozen teacher's logits where the loss needs them, and `aux`.

  Unaugmented training data on device get their targets once; augmented or streamed
  batches get them per step (`aux["teacher_variables"]`). The per_logit reduction needs
  the targets' variance over the training set (`aux["target_var"]`).
  """
  dataset, splits = r.dataset, r.splits
  if r.feed is not None:
    return None, ({"teacher_variables": teacher} if loss.needs_teacher_logits else {})
  aux: dict = {}
  per_logit = loss.kind == "regression" and loss.reduction == "per_logit"
  train_logits = None
  if loss.needs_teacher_logits:
    splits = splits._replace(
        val={**splits.val, "teacher_logits": steps.logits_of(teacher, splits.val, cfg)},
        test={**splits.test, "teacher_logits": steps.logits_of(teacher, splits.test, cfg)})
    if per_logit or not dataset.augment:
      n = len(dataset.train["label"])
      padded = devices.put_replicated(data.pad_for_eval(dataset.train, cfg.eval_batch_size),
                                      cfg.mesh)
      train_logits = steps.logits_of(teacher, padded, cfg)[:n]
    if dataset.augment:
      aux["teacher_variables"] = teacher
    else:
      splits = splits._replace(train={**splits.train, "teacher_logits": train_logits})
  if per_logit:
    aux["target_var"] = jnp.asarray(target_variance(
        loss.target, None if train_logits is None else np.asarray(train_logits),
        dataset.train["label"], dataset.num_classes), jnp.float32)
  return splits, aux


def target_variance(target, train_teacher_logits, labels, num_classes):
  """Per-logit variance of the regression targets over the training set (per_logit)."""
  if target == "teacher":
    return np.var(train_teacher_logits, axis=0) + 1e-8
  p = np.bincount(labels, minlength=num_classes) / len(labels)
  return p * (1 - p) + 1e-8


def resume(phase: Phase, state: steps.TrainState,
           history: list) -> tuple[steps.TrainState, list, dict | None]:
  """(state, history, the running metric sums of an epoch stopped midway, if any) from the
  phase's latest readable checkpoint, with the Grain iterator where it stood; else the given
  ones, saved as the phase's first checkpoint. metrics.jsonl then holds exactly that history."""
  restored = phase.checkpoints.restore_latest(state)
  partial = None
  if restored:
    step, state, meta = restored
    history, partial = meta["history"], meta.get("partial")
    if phase.batches is not None:
      phase.checkpoints.restore_data(step, phase.batches)
    _print(f"resumed {phase.name} at stage {int(state.stage)}, epoch {int(state.epoch)}, "
           f"step {step}")
  else:
    phase.checkpoints.save(0, state, {"history": history}, data=phase.batches)
  workdir_lib.rewrite(phase.log, history)
  return state, history, partial


def train_stages(state: steps.TrainState, stages: list[methods.Stage], history: list,
                 phase: Phase, partial: dict | None = None) -> tuple[steps.TrainState, list]:
  """Trains `stages` from wherever `state` stands: (state, history + one record per epoch).

  Each stage starts at its α with the initial learning rate; a checkpoint follows every
  `every_epochs` epochs and every stage end (kept for later analysis). `partial`: the
  metric sums of an epoch resumed midway.
  """
  history = list(history)
  while int(state.stage) < len(stages):
    k = int(state.stage)
    if int(state.stage_epoch) == 0 and partial is None:
      state = steps.start_stage(state, jnp.float32(stages[k].alpha), phase.opt,
                                phase.reset_momentum)
    state, record = train_one_epoch(state, stages[k], k, phase, history, partial)
    partial = None
    history.append(record)
    stop = stop_requested(int(state.step))
    if record["stage_end"] or record["epoch"] % phase.every_epochs == 0 or stop:
      phase.checkpoints.save(int(state.step), state, {"history": history},
                             stage_end=record["stage_end"], data=phase.batches)
    workdir_lib.append(phase.log, record, len(history))
    if stop:
      stopped(phase, state)
    left = 0 if record["stage_end"] else (stages[k].max_epochs - int(state.stage_epoch))
    _print(f"[{record['phase']}] stage {k + 1}/{len(stages)} α={record['alpha']:.3f} "
           f"epoch {record['epoch']} lr={record['lr']:.2e} "
           f"train_loss={record['train_loss']:.4f} val_loss={record['val_loss']:.4f} "
           f"val_acc={record['val_accuracy']:.4f} ({record['seconds']:.1f}s/epoch, "
           f"≤{left * record['seconds']:.0f}s left in stage)")
  return state, history


def train_one_epoch(state, stage: methods.Stage, k: int, phase: Phase, history: list,
                    partial: dict | None = None):
  """One epoch, its validation, the plateau update and the stage's end: (state, record)."""
  t0 = time.time()
  lr = phase.opt.learning_rate * float(opt_lib.lr_scale(state.opt_state))
  if phase.feed is None:
    order = steps.epoch_order(state, phase.splits.train, phase.cfg)
    state, train_m = steps.train_epoch(state, phase.splits.train, order, phase.aux, phase.cfg)
  else:
    state, train_m = stream_epoch(state, phase, history, partial)
  val_m = evaluate(phase, "val", steps.variables_of(state, phase.cfg.form), state.alpha,
                   phase.aux, phase.cfg)
  train_loss, val_loss, epoch = float(train_m["loss"]), float(val_m["loss"]), int(state.epoch)
  if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
    raise NonFiniteLoss(
        f"non-finite loss (train {train_loss}, validation {val_loss}) in phase {stage.phase}, "
        f"stage {k}, epoch {epoch}; the last good checkpoint is in {phase.checkpoints.directory}")
  state = steps.observe(state, val_m["loss"], phase.opt)
  stage_end = (int(state.stage_epoch) >= stage.max_epochs or
               0 < phase.advance_after_cuts <= int(state.cuts))
  if stage_end:
    state = state.replace(stage=state.stage + 1, stage_epoch=jnp.zeros_like(state.stage_epoch))
  record = {"phase": stage.phase, "stage": k, "alpha": stage.alpha, "epoch": epoch, "lr": lr,
            "train_loss": train_loss, "train_accuracy": float(train_m["accuracy"]),
            "val_loss": val_loss, "val_accuracy": float(val_m["accuracy"]),
            "seconds": time.time() - t0, "stage_end": stage_end}
  if "per_logit" in train_m:
    record["train_per_logit_mse"] = [float(v) for v in np.asarray(train_m["per_logit"])]
  return state, record


def stream_epoch(state, phase: Phase, history: list, partial: dict | None):
  """The rest of one epoch, batch by batch from the phase's Grain iterator: (state, the
  epoch's mean metrics). Saves every `every_steps` steps, and on SIGTERM saves and stops."""
  n = phase.feed.steps_per_epoch
  step = int(state.step)
  sums = None if partial is None else devices.put_replicated(
      {k: np.asarray(v, np.float32) for k, v in partial.items()}, phase.cfg.mesh)
  for _ in range(step - int(state.epoch) * n, n):
    batch = phase.feed.to_global(next(phase.batches))
    if sums is None:
      sums = devices.put_replicated(jax.tree.map(
          np.asarray, steps.zero_sums(state, batch, phase.aux, phase.cfg)), phase.cfg.mesh)
    state, sums = steps.train_batch(state, sums, batch, phase.aux, phase.cfg)
    step += 1
    if step % n == 0:  # the epoch's end: its checkpoint comes after validation
      break
    stop = stop_requested(step)
    if stop or (phase.every_steps and step % phase.every_steps == 0):
      host_sums = {k: np.asarray(v).tolist() for k, v in jax.device_get(sums).items()}
      phase.checkpoints.save(step, state, {"history": history, "partial": host_sums},
                             data=phase.batches)
      if stop:
        stopped(phase, state)
  return steps.end_epoch(state), jax.tree.map(lambda v: v / n, sums)


# ------------------------------------------------------------------ preemption

_SIGTERM = threading.Event()


@contextlib.contextmanager
def sigterm_saves_and_stops():
  """Inside the block, SIGTERM (what TPU and SLURM preemption send) asks the run to save and
  stop; the process's own handler comes back after it."""
  _SIGTERM.clear()
  if threading.current_thread() is not threading.main_thread():  # signals reach main only
    yield
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: _SIGTERM.set())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def stop_requested(step: int) -> bool:
  """Whether to save and stop after `step`: on every process at the same step (several
  processes agree through JAX's preemption sync point)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.reached_preemption_sync_point(step)
  return _SIGTERM.is_set()


def stopped(phase: Phase, state) -> None:
  close(phase)
  raise Preempted(f"stopped by SIGTERM: saved {phase.name} at step {int(state.step)} (epoch "
                  f"{int(state.epoch)}) in {phase.checkpoints.directory}; run the same "
                  "command to resume")


# ------------------------------------------------------------------ export, evaluation, summary

def export_and_evaluate(r: Run, phase, state, masks, teacher_params) -> dict:
  """The blended model at α = 0, then the pruned network alone, saved, reloaded and scored."""
  config, dataset = r.config, r.source
  blended = evaluate(phase, "test", steps.variables_of(state, phase.cfg.form), jnp.float32(0.0),
                     phase.aux, phase.cfg)
  # The masks the model ends with (gmp chose its own while training).
  layer_masks = jax.device_get(state.masks if config.method == "gmp" else masks)
  path = os.path.join(r.workdir, "export")
  saved = export.export(path, phase.cfg.form, state, layer_masks, r.plain,
                        config.model.to_dict(), dataset, jax.device_get(teacher_params),
                        config.prune.structure)
  reloaded, _ = export.load(path, saved.model, dataset.image_shape)
  scores = accuracies(r, saved.model, devices.put_replicated(reloaded, r.mesh))
  counts = {k: saved.meta[k] for k in ("prunable_params", "kept_prunable_params",
                                       "params_total_before", "params_total_after")}
  return {"val": scores["val"], "test": scores["test"], "blended_test": float(blended["accuracy"]),
          "form": phase.cfg.form, "loss": phase.cfg.loss.kind, "counts": counts}


def summarise(config, alphas, history, teacher_acc, pruned, compilations,
              wall_seconds) -> dict:
  counts = pruned["counts"]
  return {
      "method": config.method,
      "teacher_test_accuracy": teacher_acc["test"],
      "pruned_test_accuracy": pruned["test"],
      "keep_ratio": float(config.prune.keep_ratio),
      "keep_ratio_measured": counts["kept_prunable_params"] / counts["prunable_params"],
      **counts,
      "alphas": alphas,
      "epochs_total": sum(1 for h in history if h["phase"] in ("prune", "finetune")),
      "wall_seconds": wall_seconds,
      "teacher_val_accuracy": teacher_acc["val"],
      "pruned_val_accuracy": pruned["val"],
      "blended_alpha0_test_accuracy": pruned["blended_test"],
      "dataset": config.data.name, "model": config.model.name,
      "structure": config.prune.structure, "loss": pruned["loss"],
      "blend_form": pruned["form"], "seed": config.seed,
      "train_epoch_compilations": compilations,
  }


def finish(config, workdir, summary) -> None:
  """summary.json, the report, and the closing line (process 0)."""
  workdir_lib.write_summary(workdir, summary)
  if not devices.is_primary():
    return
  if config.report.enabled:
    from alphaprune import report
    report.write_report(workdir)
  _print(f"done: teacher test accuracy {summary['teacher_test_accuracy']:.4f}, pruned "
         f"{summary['pruned_test_accuracy']:.4f} with {summary['params_total_after']}/"
         f"{summary['params_total_before']} parameters ({summary['wall_seconds']:.0f}s)")
