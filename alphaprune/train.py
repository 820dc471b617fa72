"""The main job, as a pipeline:

    validate → data → teacher → masks → stages → export → evaluate → summary → report

`run(config, workdir)` reads top to bottom as that list, one named call a step; each takes
values and returns values. What can be wrong is found first, before anything is written
(`preflight`). The jitted work is in `steps`, each method's starting point and
stages in `methods`, the input in `data` (one pipeline, chosen once: the driver never asks
which), placement in `devices`, the run's files in `workdir` and `checkpoint`, preemption
in `preemption`, the pruned model in `export`.

Resume order: the latest readable checkpoint of a phase in the workdir, else the teacher
(`teacher.checkpoint`, or pretrained here and saved in workdir/teacher), else scratch. Data
order comes from (seed, phase, epoch), randomness from fold_in(rng, step), and a streamed
checkpoint holds the Grain iterator's position and the epoch's running metric sums, so a
run resumed at an epoch end or in the middle of one ends bit-identical to an uninterrupted
one. The metrics history is a value: each phase's checkpoints carry all of it, pretraining
included, and metrics.jsonl is rewritten from it on resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alphaprune import blending, checkpoint, devices, export, losses, masks as masks_lib
from alphaprune import kernels, methods, models, preemption, preflight, rngs, schedules, steps
from alphaprune import tree, usermodels
from alphaprune import workdir as workdir_lib
from alphaprune import optimizer as opt_lib
from alphaprune import data
from alphaprune.config import first_line
from alphaprune.data import augment as augment_lib, pipeline as data_pipeline


class NonFiniteLoss(RuntimeError):
  pass


Preempted = preemption.Preempted


class Context(NamedTuple):
  """What every step of one run reads and never changes: its settings, data and devices."""

  config: ml_collections.ConfigDict
  workdir: str
  source: data.Source
  inputs: data_pipeline.Pipeline  # the input pipeline, chosen once
  plain: models.nn.Module  # the dense model the config names
  mesh: jax.sharding.Mesh
  log: workdir_lib.Log


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase: what its epochs run on, and where they are recorded."""

  name: str  # "pretrain" | "prune": its checkpoint folder and data-order salt
  cfg: steps.StepConfig
  opt: opt_lib.Optimizer
  inputs: Any  # the pipeline's input of this phase (see data.pipeline)
  checkpoints: checkpoint.RunCheckpoints
  log: workdir_lib.Log
  every_epochs: int = 1
  every_steps: int = 0
  advance_after_cuts: int = 0
  reset_momentum: bool = False
  scope: str = "layer"  # imp's rounds allocate their masks by it


def _print(msg: str) -> None:
  if devices.is_primary():
    print(msg, flush=True)


def _warn(msg: str) -> None:
  if devices.is_primary():
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the pipeline

def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The whole pipeline; returns the summary (also written to workdir/summary.json)."""
  t_start = time.time()
  devices.use_compilation_cache(config.compile_cache)
  source, kind, plain, alphas = preflight.check(config, workdir)
  with workdir_lib.lock(workdir), preemption.saves_and_stops():  # nothing written before
    workdir_lib.write_config(config, workdir)
    preflight.check_platform(config)
    _print(schedules.describe(alphas))
    for note in preflight.plateau_notes(config):
      _print(note)
    ctx = start(config, workdir, source, kind, plain)
    t_teacher = time.time()
    teacher, history, pretrained = teacher_variables(ctx)
    pretrain_seconds = time.time() - t_teacher if pretrained else 0.0
    teacher_acc = evaluate_teacher(ctx, teacher)
    masks = choose_masks(config, teacher, plain, ctx.source)
    phase, state, stages = prune_phase(ctx, teacher, masks, alphas)
    state, history, partial = resume(phase, state, history)
    with steps.count_compilations(*steps.TRAINING_PROGRAMS) as compiled:
      state, history = train_stages(state, stages, history, phase, partial)
    phase.inputs.close()
    phase.checkpoints.close()
    workdir_lib.close(ctx.log)
    pruned = export_and_evaluate(ctx, phase, state, masks, teacher["params"])
    summary = summarise(config, alphas, history, teacher_acc, pruned, compiled["count"],
                        time.time() - t_start - pretrain_seconds, pretrain_seconds)
    summary["warnings"], summary["diverged"] = warnings_of(summary, history,
                                                           source.num_classes)
    finish(config, workdir, summary)
  return summary


def start(config, workdir, source: data.Source, kind: str, plain) -> Context:
  """The run's mesh, log and input pipeline."""
  mesh = devices.make_mesh()
  _print(f"data: {source.name}, {source.num_examples('train')} train / "
         f"{source.num_examples('val')} validation / {source.num_examples('test')} test "
         f"examples, {kind} pipeline")
  inputs = data_pipeline.open_pipeline(kind, source, config.data, config.seed, mesh)
  return Context(config, workdir, source, inputs, plain, mesh, workdir_lib.open_log(workdir))


def step_config(ctx: Context, model, **fields) -> steps.StepConfig:
  """The run-wide static settings of a step, an epoch or an evaluation of `model`."""
  return steps.StepConfig(model=model, loss=fields.pop("loss", losses.Loss()),
                          mean=ctx.source.mean, std=ctx.source.std, mesh=ctx.mesh,
                          augment=ctx.inputs.augments_on_device,
                          batch_size=ctx.config.data.batch_size,
                          eval_batch_size=ctx.config.data.eval_batch_size,
                          compute_dtype=ctx.config.train.compute_dtype, **fields)


# ------------------------------------------------------------------ teacher

def teacher_variables(ctx: Context) -> tuple[dict, list, bool]:
  """(the dense teacher's variables, its pretraining epochs, whether this call pretrained
  it): given by teacher.checkpoint, pretrained here by an earlier attempt
  (workdir/teacher), or pretrained now."""
  if ctx.config.teacher.checkpoint:
    variables, _ = export.load(ctx.config.teacher.checkpoint, ctx.plain, ctx.source.image_shape)
    return devices.put_replicated(variables, ctx.mesh), [], False
  path = os.path.join(ctx.workdir, "teacher")
  if os.path.exists(os.path.join(path, "model.json")):
    try:
      variables, meta = export.load(path, ctx.plain, ctx.source.image_shape)
      return devices.put_replicated(variables, ctx.mesh), meta["history"], False
    except Exception as e:  # damaged: the pretraining checkpoints hold the same weights
      aside = f"{path}.unreadable-{int(time.time())}"
      _warn(f"{path} cannot be used ({type(e).__name__}: {first_line(e)}); moved to {aside} "
            "and rebuilt from checkpoints/pretrain")
      if devices.is_primary():
        os.replace(path, aside)
  variables, history = pretrain(ctx)
  checkpoint.save_model(path, variables, {"model": ctx.config.model.to_dict(),
                                          "num_classes": ctx.source.num_classes,
                                          "history": history})
  variables, meta = export.load(path, ctx.plain, ctx.source.image_shape)
  return devices.put_replicated(variables, ctx.mesh), meta["history"], True


def pretrain(ctx: Context) -> tuple[dict, list]:
  """Dense training of the teacher: every kernel trainable, nothing masked."""
  config = ctx.config
  variables = dict(ctx.plain.init(jax.random.PRNGKey(config.seed),
                                  jnp.zeros((1,) + ctx.source.image_shape)))
  params = variables.pop("params")
  ones = jax.tree.map(lambda w: np.ones(w.shape, bool),
                      tree.subset(params, masks_lib.prunable_paths(params)))
  kernels, rest = blending.split(params, ones)
  opt = opt_lib.make_optimizer(optimizer=config.teacher.optimizer,
                               learning_rate=config.teacher.learning_rate,
                               momentum=config.train.momentum, **config.train.plateau)
  state = devices.put_replicated(steps.init_state(
      {"teacher": {}, "student": kernels, "shared": rest}, variables, ones, opt.tx, config.seed),
      ctx.mesh)
  cfg = step_config(ctx, ctx.plain, tx=opt.tx)
  stages = [methods.Stage("pretrain", 0.0, config.teacher.epochs)]
  phase = make_phase(ctx, "pretrain", cfg, opt, stages)
  state, history, partial = resume(phase, state, [])
  state, history = train_stages(state, stages, history, phase, partial)
  phase.inputs.close()
  phase.checkpoints.close()
  return jax.device_get(blending.export_variables(
      "layer", state.params, state.model_state, state.masks)), history


def scores(ctx: Context, model, variables) -> dict:
  """A plain (unblended) network's validation and test accuracy, and its test negative
  log-likelihood and expected calibration error: {"val", "test", "test_nll", "test_ece"}."""
  cfg = step_config(ctx, model)
  val, test = (ctx.inputs.evaluate(split, variables, cfg) for split in ("val", "test"))
  return {"val": float(val["accuracy"]), "test": float(test["accuracy"]),
          "test_nll": float(test["nll"]), "test_ece": float(test["ece"])}


def evaluate_teacher(ctx: Context, teacher) -> dict:
  """The teacher at α = 1: the starting point, evaluated, never trained."""
  result = scores(ctx, ctx.plain, teacher)
  _print(f"teacher: val_acc={result['val']:.4f} test_acc={result['test']:.4f}")
  return result


# ------------------------------------------------------------------ masks

def choose_masks(config, teacher, plain, source: data.Source) -> dict:
  """Fixed masks over the prunable kernels, chosen once from the teacher's weights."""
  prune = config.prune
  teacher_params = teacher["params"]
  groups, logits, units = None, (), None
  if prune.structure == "filter":
    groups = plain.channel_groups()
    if groups is None:  # a user's model: its head keeps every class
      paths = masks_lib.prunable_paths(teacher_params, prune.include, prune.exclude)
      logits = usermodels.logits_kernels(plain, teacher, source.image_shape, paths,
                                         source.num_classes)
  elif prune.structure in models.UNIT_STRUCTURES:
    units = plain.unit_groups(prune.structure)
  axes = kernels.contracting_axes(plain, teacher, source.image_shape)
  norms = (kernels.input_norms(plain, teacher, calibration_images(config, source))
           if prune.criterion == "wanda" else None)
  masks = masks_lib.compute_masks(
      jax.device_get(teacher_params), keep_ratio=prune.keep_ratio, criterion=prune.criterion,
      scope=prune.scope, structure=prune.structure, n=prune.n, m=prune.m,
      include=prune.include, exclude=prune.exclude, groups=groups, logits=logits,
      key=rngs.key(config.seed, rngs.MASKS), axes=axes, norms=norms, units=units,
      round_to=prune.round_to)
  counts = masks_lib.param_counts(teacher_params, masks)
  for path, mask in tree.flatten(masks).items():
    _print(f"  prunable {path} {'×'.join(map(str, np.shape(mask)))}: "
           f"{int(np.sum(mask))}/{np.size(mask)} kept")
  _print(f"masks: {counts['kept_prunable_params']}/{counts['prunable_params']} prunable weights "
         f"kept ({counts['kept_prunable_params'] / counts['prunable_params']:.4f}); "
         f"{counts['params_total_after']}/{counts['params_total_before']} parameters in all")
  return masks


CALIBRATION = 256  # training images whose activations Wanda's criterion reads


def calibration_images(config, source: data.Source):
  """A seeded sample of the training set, normalised: the batch Wanda reads activations of."""
  rows = np.random.default_rng([config.seed, rngs.MASKS]).choice(
      source.rows["train"], min(CALIBRATION, source.num_examples("train")), replace=False)
  images = data.read(source, "train", np.sort(rows), resized=True)["image"]
  return augment_lib.normalise(images, source.mean, source.std)


# ------------------------------------------------------------------ the α-stages

def run_loss(config) -> losses.Loss:
  kind = "distillation" if config.method == "distill" else config.loss.kind
  return losses.Loss(**{**config.loss.to_dict(), "kind": kind})


def parametrisation_of(config) -> str:
  """How the method's trainable parts become the model's parameters."""
  return {"alpha_blend": config.blend.form, "soft": "soft"}.get(config.method, "layer")


def prune_phase(ctx: Context, teacher, masks,
                alphas) -> tuple[Phase, steps.TrainState, list[methods.Stage]]:
  """The method's starting state, the phase it trains in, and its stages."""
  config = ctx.config
  parametrisation = parametrisation_of(config)
  key = rngs.key(config.seed, rngs.STUDENT)
  fresh = (ctx.plain.init(jax.random.fold_in(key, 1), jnp.zeros((1,) + ctx.source.image_shape))
           if config.method in ("scratch", "distill") else None)
  params, model_state, start_masks = methods.initial_params(
      config.method, parametrisation, key, jax.device_get(teacher), masks, config.prune.init,
      fresh_vars=fresh, axes=kernels.contracting_axes(ctx.plain, teacher, ctx.source.image_shape))
  opt = opt_lib.make_optimizer(optimizer=config.train.optimizer,
                               learning_rate=config.train.learning_rate,
                               momentum=config.train.momentum,
                               teacher_trainable=config.teacher.trainable,
                               pruned_fixed=config.method != "soft", **config.train.plateau)
  state = devices.put_replicated(steps.init_state(params, model_state, start_masks, opt.tx,
                                                  config.seed), ctx.mesh)
  stages = methods.stages(config.method, alphas, config.train.max_epochs_per_stage,
                          config.train.finetune_epochs, config.train.baseline_stages,
                          config.prune.keep_ratio, config.imp.rounds)
  gmp = (gmp_of(config, ctx.source.num_examples("train"), len(alphas), masks)
         if config.method == "gmp" else None)
  model = ctx.plain if parametrisation != "block" else models.make_model(
      config.model, ctx.source.num_classes, "block", freeze_teacher=not config.teacher.trainable)
  cfg = step_config(ctx, model, parametrisation=parametrisation, loss=run_loss(config),
                    tx=opt.tx, teacher_model=ctx.plain, gmp=gmp,
                    student_grad_cap=(config.blend.rescale_cap
                                      if config.blend.rescale_student_grad else 0.0),
                    track_student=config.train.log_student_norms)
  return make_phase(ctx, "prune", cfg, opt, stages, teacher), state, stages


def gmp_of(config, num_train: int, num_stages: int, masks) -> methods.GmpSettings:
  budget_steps = num_stages * config.train.max_epochs_per_stage * (
      num_train // config.data.batch_size)
  shapes = {path: np.shape(mask) for path, mask in tree.flatten(masks).items()}
  gmp = methods.gmp_settings(config.gmp.update_every, config.gmp.prune_fraction,
                             config.gmp.initial_sparsity, config.prune.keep_ratio, budget_steps,
                             shapes, config.prune.scope)
  _print(f"gmp: {gmp.updates} mask updates every {gmp.every} steps, sparsity "
         f"{gmp.initial_sparsity:.2f} → {gmp.final_sparsity:.2f} allocated by "
         f"{config.prune.scope}, then fine-tuning at the final sparsity")
  return gmp


def make_phase(ctx: Context, name, cfg, opt, stages, teacher=None) -> Phase:
  """A phase of `stages` with its input (the teacher's targets where the loss needs them)
  and its checkpoints."""
  config = ctx.config
  inputs = ctx.inputs.phase(rngs.DATA_ORDER[name], sum(stage.max_epochs for stage in stages),
                            cfg, teacher)
  return Phase(name=name, cfg=cfg, opt=opt, inputs=inputs, log=ctx.log,
               checkpoints=checkpoint.RunCheckpoints(
                   os.path.join(ctx.workdir, "checkpoints", name), config.checkpoint.keep,
                   json.loads(config.to_json_best_effort())),
               every_epochs=config.checkpoint.every_epochs,
               every_steps=config.checkpoint.every_steps,
               advance_after_cuts=config.train.advance_after_cuts,
               reset_momentum=config.train.reset_momentum, scope=config.prune.scope)


def resume(phase: Phase, state: steps.TrainState,
           history: list) -> tuple[steps.TrainState, list, dict | None]:
  """(state, history, the running metric sums of an epoch stopped midway, if any) from the
  phase's latest readable checkpoint, with the input's iterator where it stood; else the
  given ones, saved as the phase's first checkpoint. metrics.jsonl then holds exactly that
  history."""
  restored = phase.checkpoints.restore_latest(state)
  partial = None
  if restored:
    step, state, meta = restored
    history, partial = meta["history"], meta.get("partial")
    phase.checkpoints.restore_data(step, phase.inputs.iterator)
    _print(f"resumed {phase.name} at stage {int(state.stage)}, epoch {int(state.epoch)}, "
           f"step {step}")
  else:
    phase.checkpoints.save(0, state, {"history": history}, data=phase.inputs.iterator)
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
    index = int(state.stage)
    stage = stages[index]
    if int(state.stage_epoch) == 0 and partial is None:
      if stage.prune_to is not None:
        state = prune_round(state, stage.prune_to, phase)
      state = steps.start_stage(state, jnp.float32(stage.alpha), phase.opt,
                                phase.reset_momentum)
    state, record = train_one_epoch(state, stage, index, phase, history, partial)
    partial = None
    history.append(record)
    stop = preemption.requested(int(state.step))
    if record["stage_end"] or record["epoch"] % phase.every_epochs == 0 or stop:
      phase.checkpoints.save(int(state.step), state, {"history": history},
                             stage_end=record["stage_end"], data=phase.inputs.iterator)
    workdir_lib.append(phase.log, record, len(history))
    if stop:
      stopped(phase, state)
    _print(progress_line(record, stage, index, len(stages), int(state.stage_epoch)))
  return state, history


def prune_round(state: steps.TrainState, keep_ratio: float, phase: Phase) -> steps.TrainState:
  """A round of iterative magnitude pruning as a stage starts: the trained weights' largest,
  `keep_ratio` of them, allocated by the run's scope; the rest set to zero for good."""
  masks = methods.imp_masks(state.params["student"], state.masks, keep_ratio, phase.scope)
  masks = devices.put_replicated(masks, phase.cfg.mesh)
  student = blending.apply_masks(state.params["student"], masks)
  kept = sum(int(np.sum(mask)) for mask in tree.flatten(jax.device_get(masks)).values())
  _print(f"imp: pruned to keep {keep_ratio:.4f} ({kept} weights)")
  return state.replace(masks=masks, params={**state.params, "student": student})


def progress_line(record: dict, stage: methods.Stage, index: int, num_stages: int,
                  stage_epoch: int) -> str:
  left = 0 if record["stage_end"] else stage.max_epochs - stage_epoch
  return (f"[{record['phase']}] stage {index + 1}/{num_stages} α={record['alpha']:.3f} "
          f"epoch {record['epoch']} lr={record['lr']:.2e} "
          f"train_loss={record['train_loss']:.4f} val_loss={record['val_loss']:.4f} "
          f"val_acc={record['val_accuracy']:.4f} ({record['seconds']:.1f}s/epoch, "
          f"≤{left * record['seconds']:.0f}s left in stage)")


def train_one_epoch(state, stage: methods.Stage, index: int, phase: Phase, history: list,
                    partial: dict | None = None):
  """One epoch, its validation, the plateau update and the stage's end: (state, record)."""
  t0 = time.time()
  lr = phase.opt.learning_rate * float(opt_lib.lr_scale(state.opt_state))
  state, train_m = phase.inputs.train_epoch(state, phase.cfg, partial,
                                            midway_saves(phase, history))
  val_m = phase.inputs.evaluate("val", steps.variables_of(state, phase.cfg.parametrisation),
                                state.alpha, phase.cfg)
  train_loss, val_loss, epoch = float(train_m["loss"]), float(val_m["loss"]), int(state.epoch)
  if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
    raise NonFiniteLoss(
        f"non-finite loss (train {train_loss}, validation {val_loss}) in phase {stage.phase}, "
        f"stage {index}, epoch {epoch}; the last good checkpoint is in "
        f"{phase.checkpoints.directory}")
  state = steps.observe(state, val_m["loss"], phase.opt)
  stage_end = (int(state.stage_epoch) >= stage.max_epochs or
               0 < phase.advance_after_cuts <= int(state.cuts))
  if stage_end:
    state = state.replace(stage=state.stage + 1, stage_epoch=jnp.zeros_like(state.stage_epoch))
  record = {"phase": stage.phase, "stage": index, "alpha": stage.alpha, "epoch": epoch, "lr": lr,
            "train_loss": train_loss, "train_accuracy": float(train_m["accuracy"]),
            "val_loss": val_loss, "val_accuracy": float(val_m["accuracy"]),
            "seconds": time.time() - t0, "stage_end": stage_end}
  if "per_logit" in train_m:
    record["train_per_logit_mse"] = [float(v) for v in np.asarray(train_m["per_logit"])]
  for key in ("student_grad_norm", "student_update_norm"):  # train.log_student_norms
    if key in train_m:
      record[key] = float(train_m[key])
  return state, record


def midway_saves(phase: Phase, history: list):
  """What happens after each step inside an epoch that is fed step by step: a checkpoint
  every `every_steps` steps, and on SIGTERM a checkpoint and a stop."""
  def midway(step: int, state, sums) -> None:
    stop = preemption.requested(step)
    if stop or (phase.every_steps and step % phase.every_steps == 0):
      host_sums = {key: np.asarray(value).tolist() for key, value in jax.device_get(sums).items()}
      phase.checkpoints.save(step, state, {"history": history, "partial": host_sums},
                             data=phase.inputs.iterator)
      if stop:
        stopped(phase, state)
  return midway


def stopped(phase: Phase, state) -> None:
  phase.inputs.close()
  phase.checkpoints.close()
  raise preemption.stop(f"{phase.name} at step {int(state.step)} (epoch {int(state.epoch)}) "
                        f"in {phase.checkpoints.directory}")


# ------------------------------------------------------------------ export, evaluation, summary

def export_and_evaluate(ctx: Context, phase, state, masks, teacher_params) -> dict:
  """The blended model at α = 0, then the pruned network alone, saved, reloaded and scored."""
  config, source = ctx.config, ctx.source
  blended = phase.inputs.evaluate("test", steps.variables_of(state, phase.cfg.parametrisation),
                                  jnp.float32(0.0), phase.cfg)
  # The masks the model ends with (gmp and imp choose their own while training).
  layer_masks = jax.device_get(state.masks if config.method in methods.PRUNING else masks)
  path = os.path.join(ctx.workdir, "export")
  saved = export.export(path, phase.cfg.parametrisation, state, layer_masks, ctx.plain,
                        config.model.to_dict(), source, jax.device_get(teacher_params),
                        config.prune.structure)
  reloaded, _ = export.load(path, saved.model, source.image_shape)
  result = scores(ctx, saved.model, devices.put_replicated(reloaded, ctx.mesh))
  counts = {key: saved.meta[key] for key in ("prunable_params", "kept_prunable_params",
                                             "params_total_before", "params_total_after")}
  return {**result, "blended_test": float(blended["accuracy"]),
          "form": phase.cfg.parametrisation, "loss": phase.cfg.loss.kind, "counts": counts}


def summarise(config, alphas, history, teacher_acc, pruned, compilations, wall_seconds,
              pretrain_seconds=0.0) -> dict:
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
      "pretrain_seconds": pretrain_seconds,
      "teacher_val_accuracy": teacher_acc["val"],
      "pruned_val_accuracy": pruned["val"],
      "teacher_test_nll": teacher_acc["test_nll"], "pruned_test_nll": pruned["test_nll"],
      "teacher_test_ece": teacher_acc["test_ece"], "pruned_test_ece": pruned["test_ece"],
      "blended_alpha0_test_accuracy": pruned["blended_test"],
      "dataset": config.data.name, "model": config.model.name,
      "structure": config.prune.structure, "loss": pruned["loss"],
      "blend_form": pruned["form"], "seed": config.seed,
      "train_epoch_compilations": compilations,
  }


def warnings_of(summary: dict, history: list, num_classes: int) -> tuple[list[str], bool]:
  """(what makes a finished run no result, whether it diverged): a teacher or pruned model at
  chance accuracy (data with random labels do that too), a training loss that grew by orders
  of magnitude (diverged: more than 100 times ln(classes) for cross-entropy, or 100 times its
  phase's first epoch for the other losses)."""
  chance = 1.5 / num_classes
  out = [f"the {who} model is at chance accuracy ({summary[key]:.4f})"
         for who, key in (("teacher", "teacher_test_accuracy"), ("pruned", "pruned_test_accuracy"))
         if summary[key] <= chance]
  diverged = False
  for phase in ("pretrain", "prune"):
    losses_ = [h["train_loss"] for h in history
               if h["phase"] == phase or (phase == "prune" and h["phase"] == "finetune")]
    if not losses_:
      continue
    bound = 100 * (math.log(num_classes) if summary["loss"] == "classification" or
                   phase == "pretrain" else max(losses_[0], 1e-12))
    if max(losses_) > bound:
      diverged = True
      out.append(f"the {phase} training loss grew to {max(losses_):.3g} (first epoch "
                 f"{losses_[0]:.3g})")
  return out, diverged


def finish(config, workdir, summary) -> None:
  """summary.json, the report, and the closing line (process 0)."""
  workdir_lib.write_summary(workdir, summary)
  if not devices.is_primary():
    return
  if summary["warnings"]:
    what = "diverged" if summary["diverged"] else "ended at chance accuracy"
    _warn(f"this run {what}: {'; '.join(summary['warnings'])}; its accuracy is no result"
          + (" (lower the learning rate?)" if summary["diverged"] else ""))
  if config.report.enabled:
    from alphaprune import report
    report.write_report(workdir)
  _print(f"done: teacher test accuracy {summary['teacher_test_accuracy']:.4f}, pruned "
         f"{summary['pruned_test_accuracy']:.4f} with {summary['params_total_after']}/"
         f"{summary['params_total_before']} parameters ({summary['wall_seconds']:.0f}s)")
