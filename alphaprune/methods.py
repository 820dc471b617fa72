"""The methods compared at equal budget: where each starts, and the stages it trains.

* `alpha_blend`: the teacher plus a He-initialised, masked student, blended stage by stage
  as α falls to 0.
* `soft`: the decaying mask of Kao et al. (2022): one tensor per kernel, the teacher's,
  whose pruned entries are scaled by the stage's α, (M + α·(1−M))⊙W, with one fixed mask,
  and keep training until α = 0 removes them. α-blending with the teacher and student tied
  into one tensor, so the pair isolates what the separate, fresh student contributes. (Not
  SRFP/ASRFP, which re-select filters every epoch and decay the stored weights in place.)
* `scratch`: the pruned network alone, freshly initialised on the teacher's magnitude
  mask: a re-initialisation control in the sense of Frankle & Carbin (2019). It reads the
  teacher's weights only through the mask. `distill`: the same, trained against the
  teacher's logits as well.
* `scratch_random` (`scratch` with `prune.criterion=random`): a sparse network trained
  from scratch, which never reads the teacher at all.
* `one_shot`: the teacher's weights masked once, then trained.
* `gmp`: gradual magnitude pruning (Zhu & Gupta 2017) from the dense teacher: the masks
  follow the trained weights on a cubic sparsity schedule, allocated by `prune.scope`.
* `imp`: iterative magnitude pruning with learning-rate rewinding (Renda et al. 2020):
  `imp.rounds` rounds, each pruning the same fraction of the weights left (by the trained
  weights' magnitude, allocated by `prune.scope`) and retraining at the original rate.

Every method walks the α-run's stages: `len(alphas)` stages of `max_epochs_per_stage`
epochs, the learning rate reset and the plateau rule restarted at each (a baseline at its
own α: 0, or soft's), then `finetune_epochs` at α = 0. `train.baseline_stages=merged`
gives the baselines one stage of the same epochs instead (the earlier behaviour).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import blending, masks as masks_lib, tree

METHODS = ("alpha_blend", "soft", "scratch", "one_shot", "gmp", "imp", "distill")
STAGED = ("alpha_blend", "soft")  # methods that walk the α-schedule at its α values
PRUNING = ("gmp", "imp")  # methods that choose their masks while training
RANDOM_MASKS = "_random"  # a method name's suffix: the method with random masks
BASELINE_STAGES = ("equal", "merged")
# Settings a method does not use, and the one value it accepts for each (anything else
# would label a run with a setting that was never applied).
_TEACHERLESS = {"teacher.trainable": False, "blend.form": "layer",
                "blend.rescale_student_grad": False}
_FROM_TEACHER = {**_TEACHERLESS, "prune.init": "he_normal"}
UNUSED = {
    "soft": _FROM_TEACHER,
    "one_shot": _FROM_TEACHER,
    "scratch": _TEACHERLESS,
    "distill": _TEACHERLESS,
    "gmp": {**_FROM_TEACHER, "prune.criterion": "magnitude", "prune.structure": "unstructured"},
    "imp": {**_FROM_TEACHER, "prune.criterion": "magnitude", "prune.structure": "unstructured"},
}

class Stage(NamedTuple):
  """One stretch of training at a fixed α, the learning rate reset at its start."""

  phase: str  # "pretrain" | "prune" | "finetune" (the metrics' `phase`)
  alpha: float
  max_epochs: int
  prune_to: float | None = None  # imp: prune to this keep ratio as the stage starts


def stages(method: str, alphas: Sequence[float], epochs_per_stage: int, finetune_epochs: int,
           baseline_stages: str = "equal", keep_ratio: float = 1.0,
           imp_rounds: int = 0) -> list[Stage]:
  """The stages of a method's pruning phase: one per α of the schedule (α-blending and soft
  at that α, every other method at 0) or, with `baseline_stages="merged"`, one stage of the
  same epochs for the baselines; then fine-tuning. `imp` prunes at the start of each
  round's first stage (`prune_to`, the round's keep ratio)."""
  if method in STAGED:
    out = [Stage("prune", float(alpha), epochs_per_stage) for alpha in alphas]
  elif baseline_stages == "merged":
    out = [Stage("prune", 0.0, len(alphas) * epochs_per_stage)]
  else:
    out = [Stage("prune", 0.0, epochs_per_stage) for _ in alphas]
  if method == "imp":
    out = imp_rounds_of(out, keep_ratio, imp_rounds)
  if finetune_epochs:
    out.append(Stage("finetune", 0.0, finetune_epochs))
  return out


def imp_rounds_of(prune_stages: list[Stage], keep_ratio: float, rounds: int) -> list[Stage]:
  """IMP's rounds over the pruning stages: round r of k (0 = one per stage) starts at stage
  r·(stages/k) and prunes to keep_ratio^((r+1)/k), the same fraction of what is left each
  time, so the last round reaches the keep ratio."""
  rounds = rounds or len(prune_stages)
  per_round = len(prune_stages) // rounds
  out = []
  for index, stage in enumerate(prune_stages):
    starts_round = index % per_round == 0
    prune_to = keep_ratio ** ((index // per_round + 1) / rounds) if starts_round else None
    out.append(stage._replace(prune_to=prune_to))
  return out


def initial_params(method: str, form: str, key, teacher_vars, masks, student_init: str,
                   fresh_vars=None, axes=None):
  """(params, model_state, masks) a method starts its pruning phase from.

  `fresh_vars` are a freshly initialised network's variables, used by `scratch` and
  `distill` (which read the teacher's weights only through the mask); `axes` the
  contracting axes of DenseGeneral kernels, for He initialisation's fan-in.
  """
  if method == "alpha_blend":
    return blending.init_params(form, key, teacher_vars, masks, student_init, axes)
  if method in ("scratch", "distill"):
    fresh = dict(fresh_vars)
    kernels, rest = blending.split(fresh.pop("params"), masks)
    student = blending.init_student(key, kernels, masks, student_init, axes)
    return {"teacher": {}, "student": student, "shared": rest}, fresh, masks
  variables = dict(teacher_vars)
  kernels, rest = blending.split(variables.pop("params"), masks)
  if method == "soft":  # the teacher's kernels, whole: the pruned entries fade with α
    return {"teacher": {}, "student": kernels, "shared": rest}, variables, masks
  if method == "one_shot":
    student = blending.init_student(key, kernels, masks, "copy")
    return {"teacher": {}, "student": student, "shared": rest}, variables, masks
  if method in PRUNING:  # from the dense teacher: no weight pruned yet
    ones = jax.tree.map(lambda m: np.ones(np.shape(m), bool), masks)
    return {"teacher": {}, "student": kernels, "shared": rest}, variables, ones
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


# ------------------------------------------------------------------ gradual magnitude pruning

@dataclasses.dataclass(frozen=True)
class GmpSettings:
  """Masks recomputed at steps start + k·every, k = 0 … updates, sparsity rising cubically.

  The kept weights are allocated by `scope`: `counts[k]` are each kernel's kept weights at
  update k (`layer`, `erk`: they depend on shapes alone), `totals[k]` the kept weights of
  one ranking across all kernels (`global` by magnitude, `lamp` by LAMP scores)."""

  every: int
  updates: int
  initial_sparsity: float
  final_sparsity: float
  start: int = 0
  scope: str = "layer"
  counts: tuple = ()  # [updates + 1][kernels], in the masks' order
  totals: tuple = ()  # [updates + 1]


def gmp_settings(update_every: int, prune_fraction: float, initial_sparsity: float,
                 keep_ratio: float, budget_steps: int, shapes: dict | None = None,
                 scope: str = "layer") -> GmpSettings:
  """Mask updates spread over the first `prune_fraction` of the budget, then fine-tuning;
  `shapes`: {kernel path: shape} in the masks' order (needed for the counts)."""
  updates = max(1, int(prune_fraction * budget_steps) // update_every)
  final = 1.0 - float(keep_ratio)
  keeps = [1.0 - float(gmp_sparsity(k, updates, float(initial_sparsity), final))
           for k in range(updates + 1)]
  counts, totals = (), ()
  if shapes is not None and scope in ("layer", "erk"):
    counts = tuple(tuple(masks_lib.keep_counts(shapes, keep, scope).values()) for keep in keeps)
  elif shapes is not None:
    size = sum(int(np.prod(shape)) for shape in shapes.values())
    totals = tuple(int(round(keep * size)) for keep in keeps)
  return GmpSettings(every=update_every, updates=updates, initial_sparsity=float(initial_sparsity),
                     final_sparsity=final, scope=scope, counts=counts, totals=totals)


def gmp_sparsity(k, n, initial, final):
  """Zhu & Gupta (2017): s = s_f + (s_i − s_f)·(1 − k/n)³ at the k-th update (k = 0 … n)."""
  return final + (initial - final) * (1.0 - np.minimum(k, n) / n) ** 3


def _ranks(scores):
  """Each entry's rank by descending score (0 = largest; ties by position)."""
  return jnp.argsort(jnp.argsort(-scores, stable=True), stable=True)


def _lamp_scores(weights):
  """masks.lamp_scores in JAX, for a ranking inside the step."""
  squared = jnp.square(weights.reshape(-1))
  order = jnp.argsort(squared, stable=True)
  suffix = jnp.cumsum(squared[order][::-1])[::-1]
  scores = squared[order] / jnp.maximum(suffix, jnp.finfo(squared.dtype).tiny)
  return jnp.zeros_like(squared).at[order].set(scores)


def _per_kernel(magnitudes: dict, counts) -> dict:
  return {path: (_ranks(flat) < counts[i]).reshape(-1)
          for i, (path, flat) in enumerate(magnitudes.items())}


def _one_ranking(magnitudes: dict, total, lamp: bool) -> dict:
  """One ranking across kernels (by magnitude or LAMP score); a kernel the ranking would
  empty keeps its largest weight."""
  scores = [(_lamp_scores(flat) if lamp else flat) for flat in magnitudes.values()]
  kept = _ranks(jnp.concatenate(scores)) < total
  out, start = {}, 0
  for path, score in zip(magnitudes, scores):
    mine = kept[start:start + score.size]
    out[path] = mine | (~mine.any() & (_ranks(score) == 0))
    start += score.size
  return out


def gmp_masks(student: Any, masks: Any, step, gmp: GmpSettings):
  """At an update step: keep the largest weights for update k's sparsity, allocated by the
  scope (every kernel keeps at least one)."""
  k = (step - gmp.start) // gmp.every
  update = (step >= gmp.start) & ((step - gmp.start) % gmp.every == 0) & (k <= gmp.updates)

  def recompute():
    index = jnp.clip(k, 0, gmp.updates)
    flat_w, flat_m = tree.flatten(student), tree.flatten(masks)
    magnitudes = {path: jnp.abs(flat_w[path] * mask).reshape(-1)
                  for path, mask in flat_m.items()}
    if gmp.scope in ("layer", "erk"):
      kept = _per_kernel(magnitudes, jnp.asarray(gmp.counts)[index])
    else:
      kept = _one_ranking(magnitudes, jnp.asarray(gmp.totals)[index], gmp.scope == "lamp")
    return tree.unflatten({path: kept[path].reshape(mask.shape)
                           for path, mask in flat_m.items()})

  return jax.lax.cond(update, recompute, lambda: masks)


# ------------------------------------------------------------------ iterative magnitude pruning

def imp_masks(student: Any, masks: Any, keep_ratio: float, scope: str) -> dict:
  """A round of IMP, on the host: the masked student's largest weights, `keep_ratio` of
  every kernel's weights allocated by `scope` (already pruned weights, at zero, stay out)."""
  masked = jax.device_get(blending.apply_masks(student, masks))
  return masks_lib.compute_masks(masked, keep_ratio=keep_ratio, scope=scope,
                                 include=tuple(f"^{re.escape(path)}$" for path in tree.flatten(masks)))
