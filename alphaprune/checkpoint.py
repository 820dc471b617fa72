"""The one module that touches orbax: run checkpoints and standalone models.

Run checkpoints hold the whole train state (a pytree), as JSON the metrics
history, and on the streamed pipeline the Grain iterator's state (one file per
process). Each is numbered by the optimizer steps taken in its phase. They are
written after every `every_epochs` epochs, every `every_steps` steps (streamed),
at the end of every stage and on SIGTERM; the latest `keep` are kept, and stage
ends forever.
Restoring walks back from the latest, skipping (with a warning) any
checkpoint that cannot be read, e.g. one left half-written by a killed run.

Every checkpoint, and every standalone model (the teacher, the export), carries a sha256 of
its files, computed once the save is complete and written atomically beside it
(`checksums.json` in a phase's folder, `checksum.sha256` beside a model); a restore checks
it first, so a flipped byte is a checkpoint skipped or a model refused, never a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from typing import Any, Sequence

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from alphaprune import files

_STAGE_ENDS = "stage_ends.json"
_CHECKSUMS = "checksums.json"
MODEL_CHECKSUM = "checksum.sha256"


class Corrupt(ValueError):
  """Saved bytes that are not the ones written (a failed checksum): one line."""


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class _LatestAndStageEnds(pp.PreservationPolicy):
  keep: int
  stage_ends: set

  def should_preserve(self, checkpoints: Sequence[pp.PolicyCheckpointInfo], *,
                      context: pp.PreservationContext) -> Sequence[bool]:
    latest = set(sorted(c.step for c in checkpoints)[-self.keep:])
    return [c.step in latest or c.step in self.stage_ends for c in checkpoints]


class RunCheckpoints:
  """Checkpoints of one phase of a run, in `directory`, one per optimizer step count."""

  def __init__(self, directory: str, keep: int = 2, config: dict | None = None):
    """`config`: the run's config, saved in every checkpoint's meta (config.json's spare)."""
    self.directory = os.path.abspath(directory)
    self._config = config
    self._stage_ends_path = os.path.join(self.directory, _STAGE_ENDS)
    self._checksums_path = os.path.join(self.directory, _CHECKSUMS)
    stage_ends = files.read_json(self._stage_ends_path, [])
    self._policy = _LatestAndStageEnds(max(keep, 2), set(stage_ends or []))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=self._policy, enable_async_checkpointing=False,
            create=True, cleanup_tmp_directories=True))
    # A run from before checksums has none at all: its checkpoints are trusted as they are.
    self._verified = os.path.exists(self._checksums_path) or not self.steps()
    self._checksums = files.read_json(self._checksums_path, None)
    if self._checksums is None:
      self._checksums = {}
      if os.path.exists(self._checksums_path):
        _warn(f"{self._checksums_path} is damaged; the checkpoints it vouched for are not "
              "trusted (the run falls back to what it can verify)")
    if stage_ends is None or (os.path.exists(self._stage_ends_path)
                              and files.read_json(self._stage_ends_path) is None):
      self._rebuild_stage_ends()

  def _rebuild_stage_ends(self) -> None:
    """stage_ends.json from the checkpoints themselves: one whose last epoch ended a stage."""
    for step in self.steps():
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception:  # unreadable: restore_latest deals with it
        continue
      history = meta["meta"].get("history") or []
      if history and history[-1].get("stage_end") and not meta["meta"].get("partial"):
        self._policy.stage_ends.add(step)
    _warn(f"{self._stage_ends_path} was damaged; rebuilt from the checkpoints "
          f"({sorted(self._policy.stage_ends)})")
    if jax.process_index() == 0:
      files.write_json(self._stage_ends_path, sorted(self._policy.stage_ends), indent=None)

  def save(self, step: int, state: Any, meta: dict, stage_end: bool = False,
           data: Any = None) -> None:
    """`data`: a Grain iterator whose state is saved with the train state. The checkpoint's
    checksum is written once its files are complete."""
    if stage_end:
      self._policy.stage_ends.add(int(step))
    if stage_end and jax.process_index() == 0:
      files.write_json(self._stage_ends_path, sorted(self._policy.stage_ends), indent=None)
    if self._config is not None:
      meta = {**meta, "config": self._config}
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      kept = {str(s) for s in self.steps()}
      self._checksums = {s: d for s, d in self._checksums.items() if s in kept}
      self._checksums[str(step)] = files.digest(self._step_dir(step))
      files.write_json(self._checksums_path, self._checksums)
    self._verified = True

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def verify(self, step: int) -> None:
    """Raises Corrupt unless checkpoint `step`'s files are the ones its checksum vouches for."""
    if not self._verified:
      return
    expected = self._checksums.get(str(step))
    if expected is None:
      raise Corrupt(f"checkpoint {step} has no checksum (a save cut short)")
    if files.digest(self._step_dir(step)) != expected:
      raise Corrupt(f"checkpoint {step}'s files are not the bytes that were saved")

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    self.verify(step)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_data(self, step: int, iterator: Any) -> Any:
    """`iterator` (Grain) set to the state saved with checkpoint `step` (None: the input
    has nothing saved, its order alone says where it stands)."""
    if iterator is None:
      return None
    return self._manager.restore(step, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(iterator)))["data"]

  def restore_latest(self, target: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest readable checkpoint, or None if there is none.

    Unreadable newer ones are moved to `<directory>.unreadable/` (kept for a
    post-mortem) so that the resumed run can write those steps again.
    """
    unreadable = []
    restored = None
    for step in reversed(self.steps()):
      try:
        restored = (step, *self.restore(step, target))
        break
      except Exception as e:  # corrupt or half-written: fall back to the one before
        _warn(f"checkpoint {step} in {self.directory} cannot be used ({type(e).__name__}: "
              f"{(str(e).splitlines() or [''])[0][:200]}); trying the one before")
        unreadable.append(step)
    if unreadable and jax.process_index() == 0:
      aside = self.directory + ".unreadable"
      os.makedirs(aside, exist_ok=True)
      for step in unreadable:
        shutil.move(os.path.join(self.directory, str(step)),
                    os.path.join(aside, f"{step}-{int(time.time())}"))
      self._manager.reload()
    return restored

  def close(self) -> None:
    self._manager.close()


def saved_config(workdir: str) -> dict | None:
  """The run's config as its newest readable checkpoint holds it (None if none does)."""
  for phase in ("prune", "pretrain"):
    directory = os.path.join(workdir, "checkpoints", phase)
    if not os.path.isdir(directory):
      continue
    manager = ocp.CheckpointManager(os.path.abspath(directory))
    try:
      for step in reversed(sorted(manager.all_steps())):
        try:
          meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # unreadable: try the one before
          continue
        if "config" in meta["meta"]:
          return meta["meta"]["config"]
    finally:
      manager.close()
  return None


def variables_dir(path: str) -> str | None:
  """Where a saved model's variables are: `path/variables` (alphaprune's `teacher/` and
  `export/`), or `path` itself when it is a plain orbax checkpoint (a user's own save);
  None if neither."""
  path = os.path.abspath(path)
  for candidate in (os.path.join(path, "variables"), path):
    if os.path.exists(os.path.join(candidate, "_CHECKPOINT_METADATA")):
      return candidate
  return None


def save_model(path: str, variables: Any, meta: dict) -> None:
  """A standalone model: its variables (orbax) and `model.json` beside them."""
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, "variables"), variables, force=True)
  if jax.process_index() == 0:
    files.write_json(os.path.join(path, "model.json"), meta)
    files.write_atomic(os.path.join(path, MODEL_CHECKSUM), _model_digest(path) + "\n")


def _model_digest(path: str) -> str:
  return files.digest(os.path.join(path, "variables"), os.path.join(path, "model.json"))


def verify_model(path: str) -> None:
  """Raises Corrupt unless a saved model's files are the ones its checksum vouches for (a
  model saved elsewhere, with no checksum, is taken as it is)."""
  path = os.path.abspath(path)
  checksum = os.path.join(path, MODEL_CHECKSUM)
  if not os.path.exists(checksum):
    return
  with open(checksum) as f:
    expected = f.read().strip()
  if _model_digest(path) != expected:
    raise Corrupt(f"the model in {path} is not the bytes that were saved (its checksum "
                  "fails)")


def load_model(path: str, target: Any = None) -> tuple[Any, dict]:
  """(variables, meta) of a model saved by `save_model`, or of a plain orbax checkpoint
  of a model's variables (`{"params": ..., "batch_stats": ...}`, or the params alone)."""
  path = os.path.abspath(path)
  verify_model(path)
  where = variables_dir(path) or os.path.join(path, "variables")
  bare = not _holds_collections(where)  # the params tree alone
  if bare and target is not None:
    target = target["params"]
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(where, target)
  if bare:
    variables = {"params": variables}
  meta = files.read_json(os.path.join(path, "model.json"), {})
  return variables, meta


@contextlib.contextmanager
def _quiet():
  """Orbax's own log lines kept off stderr while it reads a folder we report on ourselves."""
  from absl import logging as absl_logging
  before = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.FATAL)
  try:
    yield
  finally:
    absl_logging.set_verbosity(before)


def _metadata_tree(where: str) -> Any:
  with _quiet(), ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(where)
  tree = getattr(meta, "item_metadata", meta)
  return getattr(tree, "tree", tree)


def _holds_collections(where: str) -> bool:
  """A variables dict ({"params": ...}) rather than a bare params tree."""
  return "params" in _metadata_tree(where)


def model_shapes(path: str) -> dict:
  """{path: shape} of a saved model's variables, read from metadata only (a bare params
  tree is reported under ['params'], as the model's variables hold it)."""
  where = variables_dir(path)
  tree = _metadata_tree(where)
  if "params" not in tree:
    tree = {"params": tree}
  return {jax.tree_util.keystr(p): tuple(m.shape)
          for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}
