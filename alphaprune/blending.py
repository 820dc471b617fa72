"""α-blending of a teacher and a masked student, as pure functions of pytrees.

Trainable parameters are one dict with three parts:

* `teacher`: the teacher's prunable kernels (layer form) or its whole branch
  (block form); frozen by default.
* `student`: the student's prunable kernels, same paths as `masks`.
* `shared`: everything else (biases, normalisation): one copy, always trained.

**Layer form.** Conv and dense are linear in their kernel, so
α·f(x; W_t) + (1−α)·f(x; M⊙W_s) = f(x; α·W_t + (1−α)·M⊙W_s): the blended
network is one ordinary forward pass of the unmodified model on blended
parameters, for any Flax model. ∂L/∂W_s = (1−α)·M⊙∂L/∂W, exactly the
two-branch gradient.

**Soft** (the `soft` method, soft/decaying pruning after SRFP/ASRFP, Cai et al.
2020): one trainable tensor W per kernel, its pruned entries scaled by α,
(M + α·(1−M))⊙W. That is the layer-form blend with the teacher and student tied
into one tensor, so comparing it with α-blending isolates what the separate,
He-initialised student contributes.

**Block form** (built-in models with `blend_form="block"`): each unit has a
`teacher` and a `student` branch with its own normalisation, mixed inside the
model; here we only assemble the parameter tree with the student masked.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax

from alphaprune import tree

STUDENT_INITS = ("he_normal", "he_uniform", "copy")
# How the trainable parts become a model's parameters: a blend form, or soft pruning's
# one tied tensor.
PARAMETRISATIONS = ("layer", "block", "soft")


def blend(alpha, teacher, student, masks, shared):
  """Layer-form parameters: α·teacher + (1−α)·(mask ⊙ student), merged with `shared`."""
  mixed = jax.tree.map(lambda t, s, m: alpha * t + (1.0 - alpha) * (s * m),
                       teacher, student, masks)
  return tree.merge(mixed, shared)


def soft(alpha, weights, masks, shared):
  """Soft-pruning parameters: (M + α·(1−M)) ⊙ W, merged with `shared` (exact at α = 0, 1)."""
  return tree.merge(jax.tree.map(lambda w, m: w * (m + alpha * (1.0 - m)), weights, masks),
                    shared)


def masked_student(student, masks, shared):
  """The pruned network alone (α = 0), without touching the teacher."""
  return tree.merge(jax.tree.map(lambda s, m: s * m, student, masks), shared)


def model_params(parametrisation: str, alpha, params: Mapping[str, Any], masks) -> dict:
  """The `params` collection the model is applied to (see PARAMETRISATIONS)."""
  if parametrisation == "soft":
    return soft(alpha, params["student"], masks, params["shared"])
  if not params["teacher"]:  # dense pretraining: no teacher branch
    return masked_student(params["student"], masks, params["shared"])
  if parametrisation == "layer":
    return blend(alpha, params["teacher"], params["student"], masks, params["shared"])
  return tree.merge(params["teacher"],
                    jax.tree.map(lambda s, m: s * m, params["student"], masks),
                    params["shared"])


def init_student(key, teacher, masks, method: str = "he_normal"):
  """Fresh student kernels (masked): He-initialised, or the masked teacher (`copy`)."""
  if method == "copy":
    return jax.tree.map(lambda t, m: t * m, teacher, masks)
  if method == "he_normal":
    init = jax.nn.initializers.he_normal()
  elif method == "he_uniform":
    init = jax.nn.initializers.he_uniform()
  else:
    raise ValueError(f"unknown student init {method!r}; choose one of {STUDENT_INITS}")
  flat_t, flat_m = tree.flatten(teacher), tree.flatten(masks)
  return tree.unflatten({
      p: init(jax.random.fold_in(key, i), t.shape, t.dtype) * flat_m[p]
      for i, (p, t) in enumerate(flat_t.items())})


def split(params, masks):
  """(prunable kernels, the rest) of a layer-form parameter tree."""
  paths = tree.flatten(masks)
  return tree.subset(params, paths), tree.without(params, paths)


# ---- block form: paths `unit/rest` ↔ `unit/teacher/rest`, `unit/student/rest` ----

def _branch(flat: Mapping[str, Any], branch: str) -> dict[str, Any]:
  out = {}
  for path, value in flat.items():
    unit, _, rest = path.partition("/")
    out[f"{unit}/{branch}/{rest}"] = value
  return out


def _unbranch(flat: Mapping[str, Any], branch: str) -> dict[str, Any]:
  out = {}
  for path, value in flat.items():
    unit, b, rest = path.split("/", 2)
    if b == branch:
      out[f"{unit}/{rest}"] = value
  return out


def init_params(form: str, key, teacher_variables, masks, student_init: str = "he_normal"):
  """(trainable params, model_state, masks) for a blended run from a dense teacher.

  `teacher_variables` are the dense (layer-form) model's variables;
  `masks` are over its prunable kernels. In block form everything is mapped
  onto the two-branch parameter tree of the same model.
  """
  variables = dict(teacher_variables)
  teacher_params = variables.pop("params")
  kernels, rest = split(teacher_params, masks)
  student = init_student(key, kernels, masks, student_init)
  if form == "layer":
    return {"teacher": kernels, "student": student, "shared": rest}, variables, masks
  model_state = {name: tree.merge(tree.unflatten(_branch(tree.flatten(col), "teacher")),
                                  tree.unflatten(_branch(tree.flatten(col), "student")))
                 for name, col in variables.items()}
  params = {
      "teacher": tree.unflatten(_branch(tree.flatten(teacher_params), "teacher")),
      "student": tree.unflatten(_branch(tree.flatten(student), "student")),
      "shared": tree.unflatten(_branch(tree.flatten(rest), "student")),
  }
  masks = tree.unflatten(_branch(tree.flatten(masks), "student"))
  return params, model_state, masks


def export_variables(parametrisation: str, params, model_state, masks) -> dict[str, Any]:
  """The pruned network alone (teacher dropped), as plain layer-form model variables."""
  pruned = masked_student(params["student"], masks, params["shared"])
  if parametrisation != "block":
    return {"params": pruned, **model_state}
  variables = {"params": pruned, **model_state}
  return {name: tree.unflatten(_unbranch(tree.flatten(col), "student"))
          for name, col in variables.items()}

