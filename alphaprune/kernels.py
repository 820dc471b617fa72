"""What each kernel's axes mean, read off the model's own computation, and what feeds them.

A 2-D dense kernel contracts its first axis with the input and a conv kernel all but its
last (HWIO), but a DenseGeneral kernel may contract any of its axes: attention's query
kernel [dim, heads, head_dim] contracts the first alone, its output kernel [heads, head_dim,
dim] the first two. `contracting_axes` finds them from the `dot_general` each kernel feeds
in the model's jaxpr, so that He initialisation (fan-in), N:M groups and Wanda's input norms
use the right ones for any Flax model. `input_norms` records ‖X‖₂ of every input feature of
every Dense, DenseGeneral and Conv of a Linen model over a calibration batch (Wanda).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import tree


def default_axes(shape) -> tuple[int, ...]:
  """Every axis but the last: a dense kernel's input, a conv kernel's window and channels."""
  return tuple(range(len(shape) - 1))


def _named(var, names: dict) -> bool:
  return type(var).__name__ != "Literal" and var in names


def _walk(jaxpr, names: dict, found: dict) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, rhs_contract), _ = eqn.params["dimension_numbers"]
      for var, axes in zip(eqn.invars[:2], (lhs_contract, rhs_contract)):
        if _named(var, names):
          found.setdefault(names[var], tuple(sorted(int(a) for a in axes)))
    for value in eqn.params.values():
      for sub in (value if isinstance(value, (list, tuple)) else (value,)):
        inner = getattr(sub, "jaxpr", None)
        inner = getattr(inner, "jaxpr", inner) if inner is not None else None
        if inner is not None and hasattr(inner, "invars") and hasattr(inner, "eqns"):
          mapping = {inner_var: names[outer] for inner_var, outer in
                     zip(inner.invars[-len(eqn.invars):], eqn.invars)
                     if _named(outer, names)}
          _walk(inner, mapping, found)


def contracting_axes(model, variables, image_shape) -> dict[str, tuple[int, ...]]:
  """{kernel path: the axes it contracts with its input} for the 3-D kernels whose axes differ
  from `default_axes` (DenseGeneral's: attention's); every other kernel is left out (a 4-D
  kernel is a convolution's, whose CPU form here builds matrices from it)."""
  flat = tree.flatten(variables["params"])
  paths = list(flat)
  x = jnp.zeros((1,) + tuple(image_shape))

  def apply(*leaves):
    params = tree.unflatten(dict(zip(paths, leaves)))
    return model.apply({**variables, "params": params}, x)

  closed = jax.make_jaxpr(apply)(*(jax.ShapeDtypeStruct(np.shape(v), v.dtype)
                                   for v in flat.values()))
  names = dict(zip(closed.jaxpr.invars, paths))
  found: dict = {}
  _walk(closed.jaxpr, names, found)
  return {path: axes for path, axes in found.items()
          if path.endswith("kernel") and np.ndim(flat[path]) == 3
          and axes != default_axes(np.shape(flat[path]))}


_LINEAR = (nn.Dense, nn.DenseGeneral, nn.Conv)


def input_norms(model, variables, x) -> dict[str, np.ndarray]:
  """{kernel path: ‖X‖₂ of each of its input features over the batch `x`} for every Dense,
  DenseGeneral and Conv of a Linen model (a user's LinenModel or a built-in): shaped like
  the kernel's contracting axes (a conv's per input channel, the same at every tap)."""
  module = getattr(model, "module", model)  # usermodels.LinenModel wraps the module
  if not isinstance(module, nn.Module):
    raise ValueError("Wanda's input norms are read from Linen modules; this model is NNX")
  norms: dict[str, Any] = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, _LINEAR) and args:
      inputs = jnp.asarray(args[0], jnp.float32)
      path = "/".join(context.module.path) + "/kernel"
      if isinstance(context.module, nn.DenseGeneral):
        axis = context.module.axis if isinstance(context.module.axis, tuple) else (context.module.axis,)
        kept = len(axis)
      else:
        kept = 1  # Dense: the last axis; Conv: the channels
      squares = jnp.sum(jnp.square(inputs).reshape((-1,) + inputs.shape[-kept:]), 0)
      norms[path] = norms.get(path, 0.0) + squares
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, x)
  flat = tree.flatten(variables["params"])
  out = {}
  for path, squares in norms.items():
    if path not in flat:
      continue
    norm = np.sqrt(np.asarray(squares))
    kernel_shape = np.shape(flat[path])
    if norm.ndim == 1 and len(kernel_shape) == 4:  # a conv: the same at every tap
      norm = np.broadcast_to(norm, kernel_shape[:3])
    out[path] = norm
  return out
