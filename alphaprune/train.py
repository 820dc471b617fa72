"""The main job, as the pipeline of DESIGN §2:

    validate → data → teacher → masks → stages → export → evaluate → summary → report

`run(config, workdir)` reads top to bottom as that list, one named call a
step; each takes values and returns values. The jitted work is in `steps`,
each method's starting point and stages in `methods`, placement in `devices`,
the run's files in `workdir` and `checkpoint`, the pruned model in `export`.

Resume order: the latest readable checkpoint of a phase in the workdir, else
the teacher (`teacher.checkpoint`, or pretrained here and saved in
workdir/teacher), else scratch. Data order comes from (seed, phase, epoch) and
randomness from fold_in(rng, step), so a resumed run ends bit-identical to an
uninterrupted one. The metrics history is a value: each phase's checkpoints
carry all of it, pretraining included, and metrics.jsonl is rewritten from it
on resume.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alphaprune import blending, checkpoint, data, devices, export, losses, masks as masks_lib
from alphaprune import methods, models, rngs, schedules, steps, tree, workdir as workdir_lib
from alphaprune import optimizer as opt_lib
from alphaprune.config import ConfigError, schedule_of, validate


class NonFiniteLoss(RuntimeError):
  pass


class Splits(NamedTuple):
  """Arrays on the mesh; val and test padded for evaluation (with a 0/1 `mask`)."""

  train: dict
  val: dict
  test: dict


class Run(NamedTuple):
  """What every step of one run reads and never changes: its settings, data and devices."""

  config: ml_collections.ConfigDict
  workdir: str
  dataset: data.Dataset
  plain: models.nn.Module  # the dense model the config names
  splits: Splits
  mesh: jax.sharding.Mesh
  log: workdir_lib.Log


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase: what its epochs run on, and where they are recorded."""

  name: str  # "pretrain" | "prune": its checkpoint folder and data-order stream
  cfg: steps.StepConfig
  opt: opt_lib.Optimizer
  splits: Splits  # with the teacher's logits where the loss needs them
  aux: dict
  checkpoints: checkpoint.RunCheckpoints
  log: workdir_lib.Log
  every_epochs: int = 1
  advance_after_cuts: int = 0
  reset_momentum: bool = False


def _print(msg: str) -> None:
  if devices.is_primary():
    print(msg, flush=True)


# ------------------------------------------------------------------ the pipeline

def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The whole pipeline; returns the summary (also written to workdir/summary.json)."""
  t_start = time.time()
  dataset, plain, alphas = preflight(config, workdir)
  with workdir_lib.lock(workdir):  # nothing is written before this line
    workdir_lib.write_config(config, workdir)
    check_platform(config)
    _print(schedules.describe(alphas))
    mesh = devices.make_mesh()
    r = Run(config, workdir, dataset, plain, place(dataset, config.data.eval_batch_size, mesh),
            mesh, workdir_lib.open_log(workdir))
    teacher, history = teacher_variables(r)
    teacher_acc = evaluate_teacher(r, teacher)
    masks = choose_masks(config, teacher["params"], plain)
    phase, state, stages = prune_phase(r, teacher, masks, alphas)
    state, history = resume(phase, state, history)
    with steps.count_compilations("train_epoch") as compiled:
      state, history = train_stages(state, stages, history, phase)
    phase.checkpoints.close()
    workdir_lib.close(r.log)
    pruned = export_and_evaluate(r, phase, state, masks, teacher["params"])
    summary = summarise(config, alphas, history, teacher_acc, pruned, compiled["count"],
                        time.time() - t_start)
    finish(config, workdir, summary)
  return summary


def preflight(config, workdir) -> tuple[data.Dataset, models.nn.Module, list[float]]:
  """Everything that can be wrong, found before anything is written: raises ConfigError
  or DataError (one line each); returns (dataset, the plain model, the α-schedule)."""
  validate(config, jax.device_count())
  workdir_lib.check_free(workdir)
  workdir_lib.check_config(config, workdir)
  dataset = data.load(config.data.name, data_dir=config.data.data_dir or None,
                      manual_dir=config.data.manual_dir or None,
                      val_fraction=config.data.val_fraction, seed=config.seed,
                      download=config.data.download, max_examples=config.data.max_examples)
  plain = models.make_model(config.model, dataset.num_classes)
  check_teacher(config, plain, dataset.image_shape)
  return dataset, plain, schedule_of(config)


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


def place(dataset: data.Dataset, eval_batch_size: int, mesh) -> Splits:
  pad = lambda arrays: data.pad_for_eval(arrays, eval_batch_size)
  return Splits(devices.put_replicated(dataset.train, mesh),
                devices.put_replicated(pad(dataset.val), mesh),
                devices.put_replicated(pad(dataset.test), mesh))


def step_config(r: Run, model, **fields) -> steps.StepConfig:
  """The run-wide static settings of a step, an epoch or an evaluation of `model`."""
  return steps.StepConfig(model=model, loss=fields.pop("loss", losses.Loss()),
                          mean=r.dataset.mean, std=r.dataset.std, mesh=r.mesh,
                          augment=r.dataset.augment, batch_size=r.config.data.batch_size,
                          eval_batch_size=r.config.data.eval_batch_size, seed=r.config.seed,
                          **fields)


# ------------------------------------------------------------------ teacher

def teacher_variables(r: Run) -> tuple[dict, list]:
  """(the dense teacher's variables, its pretraining epochs): given by teacher.checkpoint,
  pretrained here by an earlier attempt (workdir/teacher), or pretrained now."""
  if r.config.teacher.checkpoint:
    variables, _ = export.load(r.config.teacher.checkpoint, r.plain, r.dataset.image_shape)
    return devices.put_replicated(variables, r.mesh), []
  path = os.path.join(r.workdir, "teacher")
  if not os.path.exists(os.path.join(path, "model.json")):
    variables, history = pretrain(r)
    checkpoint.save_model(path, variables, {"model": r.config.model.to_dict(),
                                            "num_classes": r.dataset.num_classes,
                                            "history": history})
  variables, meta = export.load(path, r.plain, r.dataset.image_shape)
  return devices.put_replicated(variables, r.mesh), meta["history"]


def pretrain(r: Run) -> tuple[dict, list]:
  """Dense training of the teacher: every kernel trainable, nothing masked."""
  c = r.config
  variables = dict(r.plain.init(jax.random.PRNGKey(c.seed),
                                jnp.zeros((1,) + r.dataset.image_shape)))
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
  phase = make_phase(r, "pretrain", cfg, opt, r.splits, {})
  state, history = resume(phase, state, [])
  state, history = train_stages(state, [methods.Stage("pretrain", 0.0, c.teacher.epochs)],
                                history, phase)
  phase.checkpoints.close()
  return jax.device_get(blending.export_variables(
      "layer", state.params, state.model_state, state.masks)), history


def accuracies(r: Run, model, variables) -> dict:
  """{"val", "test"}: the accuracy of a plain (unblended) network on both splits."""
  cfg = step_config(r, model)
  return {split: float(steps.evaluate(variables, None, getattr(r.splits, split), {},
                                      cfg)["accuracy"]) for split in ("val", "test")}


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
  targets, aux = teacher_targets(loss, r.dataset, r.splits, teacher, step_config(r, r.plain))
  key = rngs.key(c.seed, rngs.STUDENT)
  fresh = (r.plain.init(jax.random.fold_in(key, 1), jnp.zeros((1,) + r.dataset.image_shape))
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
  gmp = gmp_of(c, len(r.dataset.train["label"]), len(alphas)) if c.method == "gmp" else None
  model = models.make_model(c.model, r.dataset.num_classes, "block" if form == "block" else "layer")
  cfg = step_config(r, model, form=form,
                    loss=loss, tx=opt.tx, stream=rngs.DATA_STREAMS["prune"],
                    teacher_model=r.plain, gmp=gmp)
  return make_phase(r, "prune", cfg, opt, targets, aux), state, stages


def gmp_of(config, num_train: int, num_stages: int) -> methods.GmpSettings:
  budget_steps = num_stages * config.train.max_epochs_per_stage * (
      num_train // config.data.batch_size)
  gmp = methods.gmp_settings(config.gmp.update_every, config.gmp.prune_fraction,
                             config.gmp.initial_sparsity, config.prune.keep_ratio, budget_steps)
  _print(f"gmp: {gmp.updates} mask updates every {gmp.every} steps, sparsity "
         f"{gmp.initial_sparsity:.2f} → {gmp.final_sparsity:.2f}, then fine-tuning at the "
         "final sparsity")
  return gmp


def make_phase(r: Run, name, cfg, opt, splits, aux) -> Phase:
  c = r.config
  return Phase(name=name, cfg=cfg, opt=opt, splits=splits, aux=aux, log=r.log,
               checkpoints=checkpoint.RunCheckpoints(
                   os.path.join(r.workdir, "checkpoints", name), c.checkpoint.keep),
               every_epochs=c.checkpoint.every_epochs,
               advance_after_cuts=c.train.advance_after_cuts,
               reset_momentum=c.train.reset_momentum)


def teacher_targets(loss: losses.Loss, dataset, splits: Splits, teacher,
                    cfg: steps.StepConfig) -> tuple[Splits, dict]:
  """The splits with the frozen teacher's logits where the loss needs them, and `aux`.

  Unaugmented training data get their targets once; augmented batches get them per
  step (`aux["teacher_variables"]`). The per_logit reduction needs the targets'
  variance over the training set (`aux["target_var"]`).
  """
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


def resume(phase: Phase, state: steps.TrainState, history: list) -> tuple[steps.TrainState, list]:
  """(state, history) from the phase's latest readable checkpoint; else the given ones,
  saved as the phase's first checkpoint. metrics.jsonl then holds exactly that history."""
  restored = phase.checkpoints.restore_latest(state)
  if restored:
    state, meta = restored
    history = meta["history"]
    _print(f"resumed {phase.name} at stage {int(state.stage)}, epoch {int(state.epoch)}")
  else:
    phase.checkpoints.save(0, state, {"history": history})
  workdir_lib.rewrite(phase.log, history)
  return state, history


def train_stages(state: steps.TrainState, stages: list[methods.Stage], history: list,
                 phase: Phase) -> tuple[steps.TrainState, list]:
  """Trains `stages` from wherever `state` stands: (state, history + one record per epoch).

  Each stage starts at its α with the initial learning rate; a checkpoint follows every
  `every_epochs` epochs and every stage end (kept for later analysis).
  """
  history = list(history)
  while int(state.stage) < len(stages):
    k = int(state.stage)
    if int(state.stage_epoch) == 0:
      state = steps.start_stage(state, jnp.float32(stages[k].alpha), phase.opt,
                                phase.reset_momentum)
    state, record = train_one_epoch(state, stages[k], k, phase)
    history.append(record)
    if record["stage_end"] or record["epoch"] % phase.every_epochs == 0:
      phase.checkpoints.save(record["epoch"], state, {"history": history},
                             stage_end=record["stage_end"])
    workdir_lib.append(phase.log, record, len(history))
    left = 0 if record["stage_end"] else (stages[k].max_epochs - int(state.stage_epoch))
    _print(f"[{record['phase']}] stage {k + 1}/{len(stages)} α={record['alpha']:.3f} "
           f"epoch {record['epoch']} lr={record['lr']:.2e} "
           f"train_loss={record['train_loss']:.4f} val_loss={record['val_loss']:.4f} "
           f"val_acc={record['val_accuracy']:.4f} ({record['seconds']:.1f}s/epoch, "
           f"≤{left * record['seconds']:.0f}s left in stage)")
  return state, history


def train_one_epoch(state, stage: methods.Stage, k: int, phase: Phase):
  """One epoch, its validation, the plateau update and the stage's end: (state, record)."""
  t0 = time.time()
  lr = phase.opt.learning_rate * float(opt_lib.lr_scale(state.opt_state))
  state, train_m = steps.train_epoch(state, phase.splits.train, phase.aux, phase.cfg)
  val_m = steps.evaluate(steps.variables_of(state, phase.cfg.form), state.alpha,
                         phase.splits.val, phase.aux, phase.cfg)
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


# ------------------------------------------------------------------ export, evaluation, summary

def export_and_evaluate(r: Run, phase, state, masks, teacher_params) -> dict:
  """The blended model at α = 0, then the pruned network alone, saved, reloaded and scored."""
  config, dataset = r.config, r.dataset
  blended = steps.evaluate(steps.variables_of(state, phase.cfg.form), jnp.float32(0.0),
                           phase.splits.test, phase.aux, phase.cfg)
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
