"""The methods compared at equal budget: where each starts, and the stages it trains.

* `alpha_blend`: the teacher plus a He-initialised, masked student, blended
  stage by stage as α falls to 0.
* `soft`: one set of weights, the teacher's, whose pruned entries are scaled by α on the
  same stage schedule, (M + α·(1−M))⊙W, and keep training (soft pruning, SRFP/ASRFP):
  α-blending with the teacher and student tied into one tensor.
* `scratch`: the pruned network alone, freshly initialised (it never reads the
  teacher's weights); `distill`: the same, trained against the teacher's logits.
* `one_shot`: the teacher's weights masked once, then trained.
* `gmp`: gradual magnitude pruning (Zhu & Gupta 2017) from the dense teacher:
  the masks follow the trained weights on a cubic sparsity schedule.

Every method trains for the α-run's budget, `len(alphas) × max_epochs_per_stage`
epochs, then `finetune_epochs` at α = 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import blending

METHODS = ("alpha_blend", "soft", "scratch", "one_shot", "gmp", "distill")
STAGED = ("alpha_blend", "soft")  # methods that walk the α-schedule
RANDOM_MASKS = "_random"  # a method name's suffix: the method with random masks


class Stage(NamedTuple):
  """One stretch of training at a fixed α."""

  phase: str  # "pretrain" | "prune" | "finetune" (the metrics' `phase`)
  alpha: float
  max_epochs: int


def stages(method: str, alphas: Sequence[float], epochs_per_stage: int,
           finetune_epochs: int) -> list[Stage]:
  """α-blending and soft pruning walk the schedule; every other method trains its pruned
  network (α = 0) for the same number of epochs. Fine-tuning follows for all."""
  if method in STAGED:
    out = [Stage("prune", float(a), epochs_per_stage) for a in alphas]
  else:
    out = [Stage("prune", 0.0, len(alphas) * epochs_per_stage)]
  if finetune_epochs:
    out.append(Stage("finetune", 0.0, finetune_epochs))
  return out


def initial_params(method: str, form: str, key, teacher_vars, masks, student_init: str,
                   fresh_vars=None):
  """(params, model_state, masks) a method starts its pruning phase from.

  `fresh_vars` are a freshly initialised network's variables, used by
  `scratch` and `distill` (which never read the teacher's weights).
  """
  if method == "alpha_blend":
    return blending.init_params(form, key, teacher_vars, masks, student_init)
  if method in ("scratch", "distill"):
    fresh = dict(fresh_vars)
    kernels, rest = blending.split(fresh.pop("params"), masks)
    student = blending.init_student(key, kernels, masks, student_init)
    return {"teacher": {}, "student": student, "shared": rest}, fresh, masks
  variables = dict(teacher_vars)
  kernels, rest = blending.split(variables.pop("params"), masks)
  if method == "soft":  # the teacher's kernels, whole: the pruned entries fade with α
    return {"teacher": {}, "student": kernels, "shared": rest}, variables, masks
  if method == "one_shot":
    student = blending.init_student(key, kernels, masks, "copy")
    return {"teacher": {}, "student": student, "shared": rest}, variables, masks
  if method == "gmp":
    ones = jax.tree.map(lambda m: np.ones(np.shape(m), bool), masks)
    return {"teacher": {}, "student": kernels, "shared": rest}, variables, ones
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


# ------------------------------------------------------------------ gradual magnitude pruning

@dataclasses.dataclass(frozen=True)
class GmpSettings:
  """Masks recomputed at steps start + k·every, k = 0 … updates, sparsity rising cubically."""

  every: int
  updates: int
  initial_sparsity: float
  final_sparsity: float
  start: int = 0


def gmp_settings(update_every: int, prune_fraction: float, initial_sparsity: float,
                 keep_ratio: float, budget_steps: int) -> GmpSettings:
  """Mask updates spread over the first `prune_fraction` of the budget, then fine-tuning."""
  updates = max(1, int(prune_fraction * budget_steps) // update_every)
  return GmpSettings(every=update_every, updates=updates,
                     initial_sparsity=float(initial_sparsity),
                     final_sparsity=1.0 - float(keep_ratio))


def gmp_sparsity(k, n, initial, final):
  """Zhu & Gupta (2017): s = s_f + (s_i − s_f)·(1 − k/n)³ at the k-th update (k = 0 … n)."""
  return final + (initial - final) * (1.0 - jnp.minimum(k, n) / n) ** 3


def gmp_masks(student: Any, masks: Any, step, gmp: GmpSettings):
  """At an update step: keep exactly the largest (1 − s_k) of each kernel (at least one)."""
  k = (step - gmp.start) // gmp.every
  update = (step >= gmp.start) & ((step - gmp.start) % gmp.every == 0) & (k <= gmp.updates)

  def recompute():
    keep = 1.0 - gmp_sparsity(k.astype(jnp.float32), gmp.updates, gmp.initial_sparsity,
                              gmp.final_sparsity)

    def one(w, m):
      flat = jnp.abs(w * m).reshape(-1)
      rank = jnp.argsort(jnp.argsort(-flat, stable=True), stable=True)
      return (rank < jnp.maximum(1, jnp.round(keep * flat.size))).reshape(w.shape)
    return jax.tree.map(one, student, masks)

  return jax.lax.cond(update, recompute, lambda: masks)

