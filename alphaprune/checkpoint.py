"""The one module that touches orbax: run checkpoints and standalone models.

Run checkpoints hold the whole train state (a pytree), as JSON the metrics
history, and on the streamed pipeline the Grain iterator's state (one file per
process). Each is numbered by the optimizer steps taken in its phase. They are
written after every `every_epochs` epochs, every `every_steps` steps (streamed),
at the end of every stage and on SIGTERM; the latest `keep` are kept, and stage
ends forever.
Restoring walks back from the latest, skipping (with a warning) any
checkpoint that cannot be read, e.g. one left half-written by a killed run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Sequence

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

_STAGE_ENDS = "stage_ends.json"


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

  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._stage_ends_path = os.path.join(self.directory, _STAGE_ENDS)
    stage_ends = set()
    if os.path.exists(self._stage_ends_path):
      with open(self._stage_ends_path) as f:
        stage_ends = set(json.load(f))
    self._policy = _LatestAndStageEnds(max(keep, 2), stage_ends)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=self._policy, enable_async_checkpointing=False,
            create=True, cleanup_tmp_directories=True))

  def save(self, step: int, state: Any, meta: dict, stage_end: bool = False,
           data: Any = None) -> None:
    """`data`: a Grain iterator whose state is saved with the train state."""
    if stage_end:
      self._policy.stage_ends.add(int(step))
    if stage_end and jax.process_index() == 0:
      with open(self._stage_ends_path, "w") as f:
        json.dump(sorted(self._policy.stage_ends), f)
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
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
        logging.warning("checkpoint %d in %s cannot be read (%s: %s); trying the one before",
                        step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
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
    with open(os.path.join(path, "model.json"), "w") as f:
      json.dump(meta, f, indent=2)


def load_model(path: str, target: Any = None) -> tuple[Any, dict]:
  """(variables, meta) of a model saved by `save_model`, or of a plain orbax checkpoint
  of a model's variables (`{"params": ..., "batch_stats": ...}`, or the params alone)."""
  path = os.path.abspath(path)
  where = variables_dir(path) or os.path.join(path, "variables")
  bare = not _holds_collections(where)  # the params tree alone
  if bare and target is not None:
    target = target["params"]
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(where, target)
  if bare:
    variables = {"params": variables}
  meta = {}
  if os.path.exists(os.path.join(path, "model.json")):
    with open(os.path.join(path, "model.json")) as f:
      meta = json.load(f)
  return variables, meta


def _metadata_tree(where: str) -> Any:
  with ocp.StandardCheckpointer() as ckptr:
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
