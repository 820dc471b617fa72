"""Everything that can be wrong with a run, found before anything is written: the config,
the workdir, the data, the model (a user's built and traced abstractly), the prunable set,
and a given teacher; each failure one `ConfigError` or `DataError` line (exit 2).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from alphaprune import checkpoint, data, devices, export, masks as masks_lib, models, tree
from alphaprune import usermodels
from alphaprune import workdir as workdir_lib
from alphaprune.config import ConfigError, check_pipeline, first_line, schedule_of, validate
from alphaprune.data import pipeline as data_pipeline


def check(config, workdir) -> tuple[data.Source, str, models.nn.Module, list[float]]:
  """Everything that can be wrong, found before anything is written: raises ConfigError
  or DataError (one line each); returns (the data source, its pipeline, the plain model,
  the α-schedule)."""
  validate(config, jax.device_count())
  workdir_lib.check_writable(workdir)
  workdir_lib.check_free(workdir)
  workdir_lib.check_config(config, workdir)
  data_cfg = config.data
  source = data.open_source(data_cfg.name, data_dir=data_cfg.data_dir or None,
                            manual_dir=data_cfg.manual_dir or None,
                            val_fraction=data_cfg.val_fraction, seed=config.seed,
                            download=data_cfg.download, max_examples=data_cfg.max_examples,
                            image_size=data_cfg.image_size, augment=data_cfg.augment,
                            create_data_dir=data_cfg.prepare)
  kind = data_pipeline.choose(data_cfg.pipeline, source)
  check_pipeline(config, kind)
  if data_cfg.batch_size > source.num_examples("train"):
    raise ConfigError(f"data.batch_size={data_cfg.batch_size} is larger than the "
                      f"{source.num_examples('train')} training examples; lower it (or raise "
                      "data.max_examples)")
  plain = plain_model(config, source)
  check_prunable(config, plain, source.image_shape)
  check_teacher(config, plain, source.image_shape)
  return source, kind, plain, schedule_of(config)


def check_prunable(config, model, image_shape) -> None:
  """prune.include and prune.exclude must leave kernels to prune, and nothing else; Wanda
  reads activations from Linen modules."""
  if config.prune.criterion == "wanda" and isinstance(model, usermodels.NNXModel):
    raise ConfigError(f"prune.criterion=wanda reads each layer's inputs from Linen modules; "
                      f"{config.model.name} is an NNX module: use magnitude or random")
  params = export.abstract_variables(model, image_shape)["params"]
  prune = config.prune
  paths = masks_lib.prunable_paths(params, prune.include, prune.exclude)
  if not paths:
    raise ConfigError(f"prune.include={list(prune.include)} and prune.exclude="
                      f"{list(prune.exclude)} leave no parameter to prune (empty include: every "
                      "kernel of two or more dimensions); widen them")
  flat = tree.flatten(params)
  thin = [path for path in paths if np.ndim(flat[path]) < 2]
  if thin:
    raise ConfigError(f"prune.include matches {thin[0]}, which has "
                      f"{np.ndim(flat[thin[0]])} dimension(s); only kernels (two or more) can "
                      "be pruned: narrow the pattern")


def plain_model(config, source: data.Source):
  """The dense model the config names; a user's is built and traced abstractly first, every
  broken convention a one-line ConfigError (usermodels.check)."""
  try:
    plain = models.make_model(config.model, source.num_classes)
    if usermodels.is_user_model(config.model.name):
      plain = usermodels.check(plain, config.model.name, source.image_shape, source.num_classes)
  except usermodels.UserModelError as e:
    raise ConfigError(str(e)) from None
  return plain


def plateau_notes(config) -> list[str]:
  """What the plateau rule can do inside these stages: after a reset the first epoch always
  improves, so a cut comes after epoch patience + 1 of a stage at the earliest and acts on
  the epoch after it."""
  patience, epochs = config.train.plateau.patience, config.train.max_epochs_per_stage
  if epochs > patience + 1:
    return []
  return [f"note: stages of {epochs} epoch(s) are too short for the plateau rule to act in "
          f"them (patience {patience}: the earliest cut follows epoch {patience + 1} of a "
          "stage); every stage trains at the initial learning rate"]


def check_platform(config) -> None:
  """Says where the run trains; warns when a config sized for a GPU or TPU finds only a CPU
  (a plain `pip install` brings a CPU-only jaxlib)."""
  backend = jax.default_backend()
  if not devices.is_primary():
    return
  print(f"platform: {backend}, {jax.device_count()} device(s) in {jax.process_count()} "
        "process(es)", flush=True)
  if config.sized_for == "accelerator" and backend == "cpu":
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
  try:
    checkpoint.verify_model(path)
    got = checkpoint.model_shapes(path)
  except Exception as e:  # a damaged save, or a folder of something else
    raise ConfigError(f"teacher.checkpoint={path} cannot be read ({type(e).__name__}: "
                      f"{first_line(e)}); point it at an intact teacher/ or export/ folder")
  want = {jax.tree_util.keystr(path_): tuple(leaf.shape) for path_, leaf in
          jax.tree_util.tree_flatten_with_path(export.abstract_variables(model, image_shape))[0]}
  if want != got:
    diff = sorted(key for key in set(want) | set(got) if want.get(key) != got.get(key))[:3]
    raise ConfigError(f"teacher.checkpoint={path} does not fit model {config.model.name} "
                      f"(e.g. {diff[0]}: {got.get(diff[0])} vs {want.get(diff[0])}); "
                      "use a checkpoint of the same model and dataset")
