"""Every config key with its default, and the validation run before any work.

Config files in `configs/` start from `base_config()` and change what they
need. `validate()` raises `ConfigError` with one line that says what is wrong
and how to fix it; the driver turns that into exit code 2 before anything is
written.
"""

from __future__ import annotations

import math
import os
import re
from typing import Sequence

import ml_collections

from alphaprune import blending, losses, masks, methods, models, optimizer, schedules, usermodels
from alphaprune.data import augment

METHODS = methods.METHODS
SIZES = ("cpu", "accelerator")
# Keys that may differ when a run resumes in an existing workdir: where data
# lives, how often to checkpoint, how much to print. Anything else would make
# the resumed run a different experiment.
SAFE_TO_CHANGE = ("sized_for", "compile_cache", "data.data_dir", "data.manual_dir", "data.download", "data.prepare",
                  "data.eval_batch_size", "data.read_threads", "data.prefetch",
                  "checkpoint.every_epochs", "checkpoint.every_steps", "checkpoint.keep",
                  "report.enabled")
PIPELINES = ("auto", "device", "stream")


class ConfigError(ValueError):
  """A bad config or input: reported in one line, exit code 2."""


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of `configs/NAME.py[:VARIANT]` with `--config.KEY=VALUE` overrides, parsed
  as ml_collections' `config_flags` parses a command line (the one loader: the command
  line, `compare` and `launch/sweep.py` all use it). ConfigError (one line) on a missing
  or broken file, a key that does not exist or a value of the wrong type."""
  from absl import flags
  from ml_collections import config_flags

  path = spec.split(":", 1)[0]
  if not os.path.exists(path):
    raise ConfigError(f"config file {path} does not exist; the configs are in configs/ "
                      "(e.g. configs/fashion_mnist.py:quick)")
  argv = ["alphaprune", f"--config={spec}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
    config = values.config
    config.keys()  # the flag loads lazily: a broken file fails here
  except (KeyError, AttributeError) as e:  # an override names no key
    key = e.args[0] if e.args else str(e)
    raise ConfigError(f"no config key {str(key).strip(chr(39) + chr(34))!r} in a "
                      "--config.KEY=VALUE override; the keys and their defaults are in "
                      "alphaprune/config.py (docs/configs.md)") from None
  except flags.Error as e:  # a bad value, or the file's own error (its last line)
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ConfigError(" ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0]) from None
  except Exception as e:  # anything a config file can raise while loading
    raise ConfigError(f"cannot load --config={spec}: {type(e).__name__}: "
                      f"{first_line(e)}") from None
  return config


def first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "alpha_blend"
  # "accelerator": sized for a GPU or TPU; the driver warns when it finds only a CPU.
  c.sized_for = "cpu"
  # JAX's persistent compilation cache: a folder, "" (the per-user default), or "off"
  # (ALPHAPRUNE_COMPILE_CACHE overrides it).
  c.compile_cache = ""

  # pipeline: "device" holds the splits in device memory; "stream" reads them batch by batch
  # (Grain); "auto" picks device when they fit comfortably. image_size: the square size the
  # model sees, for datasets whose images vary in size (0: the dataset's own). augment: auto,
  # none, pad_crop_flip (CIFAR) or inception_crop_flip (ImageNet). Streamed: `workers` Grain
  # processes (0: threads of the run's own), `read_threads` each, `prefetch` batches ahead.
  # prepare: a data_dir that does not exist is built (True) or refused (False: a typo).
  c.data = dict(name="fashion_mnist", data_dir="", manual_dir="/usr/share/datasets/fashion-mnist",
                download=True, prepare=False, val_fraction=0.1, batch_size=128, eval_batch_size=1000,
                max_examples=0,  # per split, 0 = all (smoke runs)
                pipeline="auto", image_size=0, augment="auto", workers=0, read_threads=2,
                prefetch=4)
  # name: a built-in model, or a user's `package.module:Name` / `path/to/file.py:Name`
  # (Linen or NNX), built with `num_classes` and `kwargs`.
  c.model = dict(name="lenet5", hidden=(300, 100), depth=11, width=1.0, kwargs={})
  c.teacher = dict(checkpoint="", epochs=10, trainable=False, optimizer="adam",
                   learning_rate=1e-3)
  c.prune = dict(keep_ratio=0.35, criterion="magnitude", scope="layer",
                 structure="unstructured", n=2, m=4, include=masks.DEFAULT_INCLUDE,
                 exclude=(), init="he_normal", round_to=1)
  # rescale_student_grad: scale the student's gradient by min(1 / (1 − α), rescale_cap),
  # undoing the layer form's (1 − α) factor (which Adam normalises away and SGD does not).
  c.blend = dict(form="layer", rescale_student_grad=False, rescale_cap=20.0)
  c.schedule = dict(kind="exponential", rate=0.05, alpha_min=0.05, num_stages=10, alphas=())
  # baseline_stages: "equal" (every method walks the α-run's stages, the rate reset at each)
  # or "merged" (the baselines train one stage of the same epochs).
  c.train = dict(optimizer="sgd", learning_rate=1e-3, momentum=0.9, max_epochs_per_stage=350,
                 advance_after_cuts=0, finetune_epochs=0, reset_momentum=False,
                 baseline_stages="equal",
                 log_student_norms=False,  # the student's mean gradient and update norms
                 compute_dtype="float32",  # or bfloat16: the forward and backward pass
                 plateau=dict(factor=0.1, patience=10, cooldown=0, min_delta=1e-4, min_lr=0.0))
  c.loss = dict(kind="classification", target="teacher", reduction="mean", temperature=4.0,
                distill_weight=0.5)
  # Gradual magnitude pruning (method=gmp): masks recomputed every `update_every`
  # steps over the first `prune_fraction` of the budget, then fine-tuning.
  c.gmp = dict(update_every=50, prune_fraction=0.5, initial_sparsity=0.0)
  # Iterative magnitude pruning (method=imp): rounds over the pruning stages (0: one a stage).
  c.imp = dict(rounds=0)
  # every_steps > 0: also every that many steps (streamed pipeline), for long epochs.
  c.checkpoint = dict(every_epochs=1, every_steps=0, keep=2)
  c.report = dict(enabled=True)
  return c


def _choice(value, allowed, key):
  if value not in allowed:
    raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}; "
                      f"set --config.{key} to one of them")


def _positive(value, key, integer=False):
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    raise ConfigError(f"{key}={value!r} must be a number")
  if integer and int(value) != value:
    raise ConfigError(f"{key}={value!r} must be a whole number")
  if not value > 0 or not math.isfinite(value):
    raise ConfigError(f"{key}={value!r} must be a finite number > 0")


def validate(c: ml_collections.ConfigDict, device_count: int = 1) -> None:
  """Raises ConfigError (one line) on the first problem found."""
  _choice(c.method, METHODS, "method")
  _choice(c.sized_for, SIZES, "sized_for")
  if not isinstance(c.seed, int) or c.seed < 0:
    raise ConfigError(f"seed={c.seed!r} must be a non-negative integer")
  for check in (_check_data, _check_model, _check_pruning, _check_schedule, _check_training,
                _check_loss):
    check(c, device_count)


def _check_data(c, device_count):
  if not c.data.name or not isinstance(c.data.name, str):
    raise ConfigError("data.name is empty; set --config.data.name (e.g. fashion_mnist, cifar10)")
  if not 0 < c.data.val_fraction < 1:
    raise ConfigError(f"data.val_fraction={c.data.val_fraction} must be in (0, 1)")
  _positive(c.data.batch_size, "data.batch_size", integer=True)
  _positive(c.data.eval_batch_size, "data.eval_batch_size", integer=True)
  if not isinstance(c.data.max_examples, int) or c.data.max_examples < 0:
    raise ConfigError(f"data.max_examples={c.data.max_examples!r} must be a whole number >= 0 "
                      "(0 = every example)")
  _choice(c.data.pipeline, PIPELINES, "data.pipeline")
  _choice(c.data.augment, ("auto",) + augment.AUGMENTATIONS, "data.augment")
  for key in ("image_size", "workers", "read_threads"):
    if not isinstance(c.data[key], int) or c.data[key] < 0:
      raise ConfigError(f"data.{key}={c.data[key]!r} must be a whole number >= 0")
  _positive(c.data.prefetch, "data.prefetch", integer=True)
  if c.data.pipeline == "device" and c.data.augment == "inception_crop_flip":
    raise ConfigError("data.augment=inception_crop_flip runs on the host; use "
                      "data.pipeline=stream")
  if c.data.pipeline != "auto":
    check_pipeline(c, c.data.pipeline)
  for key in ("batch_size", "eval_batch_size"):
    if c.data[key] % device_count:
      raise ConfigError(f"data.{key}={c.data[key]} is not divisible by the {device_count} "
                        "devices; use a multiple of the device count")


def check_pipeline(c, pipeline: str) -> None:
  """What one input pipeline cannot do (`auto` is checked once it has chosen)."""
  if pipeline == "stream" and c.loss.reduction == "per_logit":
    raise ConfigError("loss.reduction=per_logit needs the training set's target variance, "
                      "computed on the device pipeline only; use data.pipeline=device or "
                      "loss.reduction=mean")
  if pipeline == "device" and c.checkpoint.every_steps:
    raise ConfigError("checkpoint.every_steps needs data.pipeline=stream (the device pipeline "
                      "trains an epoch as one compiled loop); set it to 0 or stream the data")


def _check_model(c, device_count):
  del device_count
  if usermodels.is_user_model(c.model.name):
    try:
      usermodels.load_class(c.model.name)
    except usermodels.UserModelError as e:
      raise ConfigError(str(e)) from None
    if c.blend.form != "layer":
      raise ConfigError(f"blend.form={c.blend.form} needs a built-in model (it rebuilds each "
                        f"unit as two branches); use blend.form=layer with {c.model.name}")
  else:
    _choice(c.model.name, models.MODELS, "model.name")
  if c.model.name == "vgg":
    _choice(c.model.depth, models.VGG_LAYOUTS, "model.depth")
  if c.model.name == "resnet" and (c.model.depth < 8 or (c.model.depth - 2) % 6):
    raise ConfigError(f"model.depth={c.model.depth} is not a CIFAR ResNet depth; "
                      "use 6n+2 (20, 32, 56)")
  if c.model.name == "imagenet_resnet":
    _choice(c.model.depth, tuple(models.IMAGENET_RESNET_LAYOUTS), "model.depth")
  units = hasattr(models.MODELS.get(c.model.name), "unit_groups")
  if c.prune.structure in models.UNIT_STRUCTURES and not units:
    raise ConfigError(f"prune.structure={c.prune.structure} removes whole transformer units of "
                      f"a model that declares them (model.name=vit); {c.model.name} does not")
  if units and c.prune.structure == "filter":
    raise ConfigError(f"prune.structure=filter is for conv nets; prune {c.model.name} by heads "
                      "or neurons (or unstructured, n:m)")
  if units and c.blend.form == "block":
    raise ConfigError(f"blend.form=block rebuilds conv and dense units in two branches; "
                      f"{c.model.name} runs in the layer form only")
  _positive(c.model.width, "model.width")
  hidden = tuple(c.model.hidden)
  if c.model.name == "mlp" and (not hidden or not all(
      isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden)):
    raise ConfigError(f"model.hidden={c.model.hidden!r} needs positive whole layer widths, "
                      "e.g. (300, 100)")
  if not c.teacher.checkpoint:
    _positive(c.teacher.epochs, "teacher.epochs", integer=True)
  _choice(c.teacher.optimizer, optimizer.OPTIMIZERS, "teacher.optimizer")
  _positive(c.teacher.learning_rate, "teacher.learning_rate")


def _check_pruning(c, device_count):
  del device_count
  p = c.prune
  if not 0 < p.keep_ratio <= 1:
    raise ConfigError(f"prune.keep_ratio={p.keep_ratio} must be in (0, 1]")
  _choice(p.criterion, masks.CRITERIA, "prune.criterion")
  for key in ("include", "exclude"):
    for pattern in p[key]:
      try:
        re.compile(pattern)
      except (re.error, TypeError) as e:
        raise ConfigError(f"prune.{key} has {pattern!r}, which is not a regular expression "
                          f"({e}); fix the pattern") from None
  _choice(p.scope, masks.SCOPES, "prune.scope")
  _choice(p.structure, masks.STRUCTURES, "prune.structure")
  if not isinstance(p.round_to, int) or p.round_to < 1:
    raise ConfigError(f"prune.round_to={p.round_to!r} must be a whole number >= 1 (e.g. 8)")
  if p.round_to > 1 and p.structure not in ("filter", "heads", "neurons"):
    raise ConfigError(f"prune.round_to={p.round_to} rounds channel, head or unit counts; "
                      f"prune.structure={p.structure} keeps none: set it to 1")
  if p.scope != "layer" and p.structure != "unstructured":
    raise ConfigError(f"prune.scope={p.scope} allocates unstructured masks only, not "
                      f"{p.structure}; use prune.scope=layer")
  if p.scope == "lamp" and p.criterion != "magnitude":
    raise ConfigError(f"prune.scope=lamp ranks magnitude scores; prune.criterion={p.criterion} "
                      "has none (use prune.criterion=magnitude or another scope)")
  if p.structure == "n:m" and not (isinstance(p.n, int) and isinstance(p.m, int)
                                    and 0 < p.n < p.m):
    raise ConfigError(f"prune.n={p.n}, prune.m={p.m}: need integers 0 < n < m (e.g. 2:4)")
  _choice(p.init, blending.STUDENT_INITS, "prune.init")
  _choice(c.blend.form, models.BLEND_FORMS, "blend.form")
  if not c.blend.rescale_cap >= 1:
    raise ConfigError(f"blend.rescale_cap={c.blend.rescale_cap} must be >= 1 (the most the "
                      "student's gradient is scaled up)")
  _positive(c.gmp.update_every, "gmp.update_every", integer=True)
  if not 0 < c.gmp.prune_fraction <= 1 or not 0 <= c.gmp.initial_sparsity < 1 - p.keep_ratio + 1e-9:
    raise ConfigError("gmp.prune_fraction must be in (0, 1] and gmp.initial_sparsity in "
                      "[0, 1 − prune.keep_ratio]")
  _check_method_uses_its_settings(c)


def _check_method_uses_its_settings(c) -> None:
  """A method refuses any setting it would ignore (the run would be labelled with a setting
  never applied), and settings that would break its budget."""
  for key, accepted in methods.UNUSED.get(c.method, {}).items():
    section, name = key.split(".")
    if c[section][name] != accepted:
      raise ConfigError(f"method={c.method} does not use {key}={c[section][name]!r}; leave it at "
                        f"{accepted!r} (or choose a method that uses it)")
  if c.method == "gmp" and c.train.advance_after_cuts:
    raise ConfigError("method=gmp spreads its sparsity over the whole budget by steps; "
                      "train.advance_after_cuts would end stages early and leave it short of "
                      "its final sparsity; set it to 0")
  if c.method == "distill" and c.loss.kind != "classification":
    raise ConfigError(f"method=distill trains with its own loss (distillation); "
                      f"loss.kind={c.loss.kind} would be ignored: leave it at classification")


def _check_schedule(c, device_count):
  del device_count
  s = c.schedule
  _choice(s.kind, schedules.KINDS, "schedule.kind")
  try:
    schedules.make_schedule(s.kind, rate=s.rate, alpha_min=s.alpha_min,
                            num_stages=s.num_stages, alphas=s.alphas)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _check_training(c, device_count):
  del device_count
  t = c.train
  _choice(t.optimizer, optimizer.OPTIMIZERS, "train.optimizer")
  _positive(t.learning_rate, "train.learning_rate")
  if not 0 <= t.momentum < 1:
    raise ConfigError(f"train.momentum={t.momentum} must be in [0, 1)")
  _positive(t.max_epochs_per_stage, "train.max_epochs_per_stage", integer=True)
  if t.advance_after_cuts < 0 or t.finetune_epochs < 0:
    raise ConfigError("train.advance_after_cuts and train.finetune_epochs must be >= 0")
  _choice(t.baseline_stages, methods.BASELINE_STAGES, "train.baseline_stages")
  _choice(t.compute_dtype, ("float32", "bfloat16"), "train.compute_dtype")
  if not isinstance(c.imp.rounds, int) or c.imp.rounds < 0:
    raise ConfigError(f"imp.rounds={c.imp.rounds!r} must be a whole number >= 0 (0: one round "
                      "a stage)")
  stages = len(schedule_of(c))
  if c.method == "imp" and c.imp.rounds and stages % c.imp.rounds:
    raise ConfigError(f"imp.rounds={c.imp.rounds} must divide the {stages} pruning stages "
                      "(each round spans the same number of stages)")
  if not 0 < t.plateau.factor < 1:
    raise ConfigError(f"train.plateau.factor={t.plateau.factor} must be in (0, 1)")
  if t.plateau.patience < 1 or t.plateau.cooldown < 0:
    raise ConfigError("train.plateau.patience must be >= 1 and train.plateau.cooldown >= 0")
  if not t.plateau.min_delta > 0:
    raise ConfigError(f"train.plateau.min_delta={t.plateau.min_delta} must be > 0 "
                      "(use a small value such as 1e-4)")
  if not 0 <= t.plateau.min_lr < t.learning_rate:
    raise ConfigError(f"train.plateau.min_lr={t.plateau.min_lr} must be in "
                      f"[0, train.learning_rate={t.learning_rate})")
  _positive(c.checkpoint.every_epochs, "checkpoint.every_epochs", integer=True)
  if not isinstance(c.checkpoint.every_steps, int) or c.checkpoint.every_steps < 0:
    raise ConfigError(f"checkpoint.every_steps={c.checkpoint.every_steps!r} must be a whole "
                      "number >= 0 (0 = at epoch ends only)")
  _positive(c.checkpoint.keep, "checkpoint.keep", integer=True)


def _check_loss(c, device_count):
  del device_count
  _choice(c.loss.kind, losses.KINDS, "loss.kind")
  _choice(c.loss.target, losses.TARGETS, "loss.target")
  _choice(c.loss.reduction, losses.REDUCTIONS, "loss.reduction")
  _positive(c.loss.temperature, "loss.temperature")
  if not 0 <= c.loss.distill_weight <= 1:
    raise ConfigError(f"loss.distill_weight={c.loss.distill_weight} must be in [0, 1]")


def schedule_of(c: ml_collections.ConfigDict) -> list[float]:
  s = c.schedule
  return schedules.make_schedule(s.kind, rate=s.rate, alpha_min=s.alpha_min,
                                 num_stages=s.num_stages, alphas=s.alphas)


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two config dicts."""
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    name = f"{prefix}{key}"
    if isinstance(a, dict) and isinstance(b, dict):
      out += changed_keys(a, b, name + ".")
    elif (list(a) if isinstance(a, (list, tuple)) else a) != \
         (list(b) if isinstance(b, (list, tuple)) else b):
      out.append(name)
  return out
