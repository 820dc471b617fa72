"""α-blending of a teacher and a masked student, as pure functions of pytrees.

Trainable parameters are one dict with three parts:

* `teacher`: the teacher's branch: its prunable kernels and their layers' biases (layer
  form), or its whole units, normalisation included (block form); frozen by default, and
  then nothing of it changes.
* `student`: the student's branch: its prunable kernels (masked, same paths as `masks`)
  and, in the layer form, its own biases.
* `shared`: everything else: in the layer form the normalisation that follows each blended
  linear op (one copy, trained); in the block form the student units' own parameters.

**Layer form.** Conv and dense are linear in their kernel and bias, so
α·f(x; W_t, b_t) + (1−α)·f(x; M⊙W_s, b_s) = f(x; α·W_t + (1−α)·M⊙W_s, α·b_t + (1−α)·b_s):
the blended network is one ordinary forward pass of the unmodified model on blended
parameters, for any Flax model. ∂L/∂W_s = (1−α)·M⊙∂L/∂W, exactly the two-branch
gradient. What follows the linear op (normalisation, activation) is shared by the two
branches; the block form keeps them apart. The student's biases start as copies of the
teacher's: the blended bias is then the teacher's at every α until training moves the
student's, so lowering α changes only the kernels, the part being pruned.

**Soft** (the `soft` method, the decaying mask of Kao et al. 2022, d·W + (1−d)·M⊙W
with d = α; not SRFP/ASRFP, which re-select filters every epoch): one trainable tensor W
per kernel, one fixed mask, its pruned entries scaled by α, (M + α·(1−M))⊙W. That is the layer-form blend with the teacher and student tied
into one tensor, so comparing it with α-blending isolates what the separate,
He-initialised student contributes.

**Block form** (built-in models with `blend_form="block"`): each unit has a
`teacher` and a `student` branch with its own normalisation, mixed inside the
model; here we only assemble the parameter tree with the student masked.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import tree

# he_sparse: He-normal scaled to each output unit's kept fan-in (Evci et al. 2022).
STUDENT_INITS = ("he_normal", "he_uniform", "he_sparse", "copy")
# How the trainable parts become a model's parameters: a blend form, or soft pruning's
# one tied tensor.
PARAMETRISATIONS = ("layer", "block", "soft")


def apply_masks(student, masks):
  """`student` with each masked leaf multiplied by its mask (its biases have none)."""
  flat_masks = tree.flatten(masks)
  return tree.unflatten({path: value * flat_masks[path] if path in flat_masks else value
                         for path, value in tree.flatten(student).items()})


def blend(alpha, teacher, student, masks, shared):
  """Layer-form parameters: α·teacher + (1−α)·(mask ⊙ student), merged with `shared`."""
  mixed = jax.tree.map(lambda t, s: alpha * t + (1.0 - alpha) * s, teacher,
                       apply_masks(student, masks))
  return tree.merge(mixed, shared)


def soft(alpha, weights, masks, shared):
  """Soft-pruning parameters: (M + α·(1−M)) ⊙ W, merged with `shared` (exact at α = 0, 1)."""
  return tree.merge(jax.tree.map(lambda w, m: w * (m + alpha * (1.0 - m)), weights, masks),
                    shared)


def masked_student(student, masks, shared):
  """The pruned network alone (α = 0), without touching the teacher."""
  return tree.merge(apply_masks(student, masks), shared)


def model_params(parametrisation: str, alpha, params: Mapping[str, Any], masks) -> dict:
  """The `params` collection the model is applied to (see PARAMETRISATIONS)."""
  if parametrisation == "soft":
    return soft(alpha, params["student"], masks, params["shared"])
  if not params["teacher"]:  # dense pretraining: no teacher branch
    return masked_student(params["student"], masks, params["shared"])
  if parametrisation == "layer":
    return blend(alpha, params["teacher"], params["student"], masks, params["shared"])
  return tree.merge(params["teacher"], apply_masks(params["student"], masks), params["shared"])


def init_student(key, teacher, masks, method: str = "he_normal", axes=None):
  """Fresh student kernels (masked): He-initialised, He scaled to the mask (`he_sparse`),
  or the masked teacher (`copy`). `axes`: {path: contracting axes} of kernels whose fan-in is
  not all their axes but the last (DenseGeneral's; `kernels.contracting_axes`)."""
  if method == "copy":
    return jax.tree.map(lambda t, m: t * m, teacher, masks)
  if method not in ("he_normal", "he_uniform", "he_sparse"):
    raise ValueError(f"unknown student init {method!r}; choose one of {STUDENT_INITS}")
  make = jax.nn.initializers.he_uniform if method == "he_uniform" else jax.nn.initializers.he_normal
  flat_t, flat_m = tree.flatten(teacher), tree.flatten(masks)
  out = {}
  for i, (path, kernel) in enumerate(flat_t.items()):
    inputs = (axes or {}).get(path)
    init = make() if inputs is None else make(
        in_axis=tuple(inputs), out_axis=tuple(a for a in range(kernel.ndim) if a not in inputs))
    weights = init(jax.random.fold_in(key, i), kernel.shape, kernel.dtype)
    if method == "he_sparse":
      weights = weights * sparse_fan_in_scale(flat_m[path], inputs)
    out[path] = weights * flat_m[path]
  return tree.unflatten(out)


def sparse_fan_in_scale(mask, inputs=None):
  """√(fan-in / kept fan-in) per output unit (the last axis, or every axis but `inputs`, the
  contracting ones): He initialisation's variance 2/fan-in becomes 2/kept fan-in, so a
  masked layer starts with a dense He layer's output variance (Evci et al. 2022, "Gradient
  Flow in Sparse Neural Networks"). A unit that keeps nothing is left as is."""
  mask = jnp.asarray(mask)
  inputs = tuple(range(mask.ndim - 1)) if inputs is None else tuple(inputs)
  fan_in = int(np.prod([mask.shape[a] for a in inputs]))
  kept = jnp.sum(mask, axis=inputs, keepdims=True)
  return jnp.sqrt(fan_in / jnp.maximum(kept, 1)).astype(jnp.float32)


def split(params, masks):
  """(prunable kernels, the rest) of a layer-form parameter tree."""
  paths = tree.flatten(masks)
  return tree.subset(params, paths), tree.without(params, paths)


def branch_paths(params, masks) -> list[str]:
  """The layer form's branch: every masked kernel and its layer's other leaves (the bias:
  the leaves beside the kernel in its module), in the tree's order."""
  kernels = set(tree.flatten(masks))
  layers = {path.rpartition("/")[0] for path in kernels}
  return [path for path in tree.flatten(params)
          if path in kernels or path.rpartition("/")[0] in layers]


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


def init_params(form: str, key, teacher_variables, masks, student_init: str = "he_normal",
                axes=None):
  """(trainable params, model_state, masks) for a blended run from a dense teacher.

  `teacher_variables` are the dense (layer-form) model's variables;
  `masks` are over its prunable kernels. In block form everything is mapped
  onto the two-branch parameter tree of the same model.
  """
  variables = dict(teacher_variables)
  teacher_params = variables.pop("params")
  kernels, rest = split(teacher_params, masks)
  student = init_student(key, kernels, masks, student_init, axes)
  if form == "layer":
    branch = branch_paths(teacher_params, masks)
    teacher, shared = tree.subset(teacher_params, branch), tree.without(teacher_params, branch)
    biases = tree.without(teacher, tree.flatten(masks))  # copies: the arrays are not shared
    student = tree.merge(student, jax.tree.map(lambda b: b.copy(), biases))
    return {"teacher": teacher, "student": student, "shared": shared}, variables, masks
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

