"""Your own Flax model, by import path, behind the interface the built-in models have.

`model.name` may be `package.module:Name` or `path/to/file.py:Name` (relative to
the working directory), naming a Linen or an NNX module class. Following Flax's
own conventions:

* Linen: built as `Name(num_classes=..., **model.kwargs)`, called as
  `__call__(x, train=...)` when it takes a `train` argument, else `__call__(x)`.
* NNX: built as `Name(num_classes, **model.kwargs, rngs=nnx.Rngs(...))`,
  switched with `.train()` / `.eval()`, called as `__call__(x)`.

Images arrive NHWC, normalised. Either way the driver sees Linen-style
variables, `{"params": ..., "batch_stats": ...}`, with `init(key, x)` and
`apply(variables, x, train=, alpha=, mutable=, rngs=)`; dropout draws from
`rngs["dropout"]`, which the train step derives from (seed, step). Only the
layer blend form exists for user models (it needs nothing from the model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class UserModelError(ValueError):
  """The named model cannot be loaded (one line; exit code 2)."""


def is_user_model(name: str) -> bool:
  return ":" in str(name)


def load_class(spec: str) -> type:
  """The class `spec` names: `package.module:Name` or `path/to/file.py:Name`."""
  where, _, name = spec.rpartition(":")
  try:
    if where.endswith(".py"):
      path = os.path.abspath(where)
      if not os.path.exists(path):
        raise FileNotFoundError(f"no file {path}")
      key = "alphaprune_user_" + hashlib.sha1(path.encode()).hexdigest()[:12]
      if key not in sys.modules:  # one module object per file: its classes compare equal
        module_spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[key] = module
        module_spec.loader.exec_module(module)
      module = sys.modules[key]
    else:
      module = importlib.import_module(where)
    cls = getattr(module, name)
  except Exception as e:  # anything an import can raise
    raise UserModelError(f"model.name={spec!r} cannot be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use "
                         "package.module:Name or path/to/file.py:Name") from None
  if not (inspect.isclass(cls) and issubclass(cls, (nn.Module, nnx.Module))):
    raise UserModelError(f"model.name={spec!r} is not a Flax Linen or NNX module class")
  return cls


def make(spec: str, num_classes: int, kwargs: dict | None = None):
  """The user's model, ready for the driver."""
  cls = load_class(spec)
  kwargs = dict(kwargs or {})
  if issubclass(cls, nnx.Module):
    return NNXModel(cls, num_classes, tuple(sorted(kwargs.items())))
  module = cls(num_classes=num_classes, **kwargs)
  return LinenModel(module, "train" in inspect.signature(cls.__call__).parameters)


@dataclasses.dataclass(frozen=True)
class LinenModel:
  """A user's Linen module (hashable: a static jit argument)."""

  module: nn.Module
  takes_train: bool

  def _train(self, train: bool) -> dict:
    return {"train": train} if self.takes_train else {}

  def init(self, key, x) -> dict:
    rngs = {"params": key, "dropout": jax.random.fold_in(key, 1)}
    return dict(self.module.init(rngs, x, **self._train(False)))

  def apply(self, variables, x, train: bool = False, alpha=None, mutable=False, rngs=None):
    del alpha  # the layer form needs nothing from the model
    return self.module.apply(variables, x, mutable=mutable, rngs=rngs, **self._train(train))

  def channel_groups(self):
    return None  # unknown topology: filter masks prune output channels only


@dataclasses.dataclass(frozen=True)
class NNXModel:
  """A user's NNX module class, seen through pure dicts of its Param and BatchStat state."""

  cls: type
  num_classes: int
  kwargs: tuple = ()  # sorted (name, value) pairs: hashable

  def _build(self, key):
    return self.cls(self.num_classes, **dict(self.kwargs), rngs=nnx.Rngs(key))

  def init(self, key, x) -> dict:
    del x  # NNX modules know their shapes when built
    _, params, stats, _ = nnx.split(self._build(key), nnx.Param, nnx.BatchStat, ...)
    return {"params": _pure(params), **({"batch_stats": _pure(stats)} if stats else {})}

  def apply(self, variables, x, train: bool = False, alpha=None, mutable=False, rngs=None):
    del alpha
    graphdef, params, stats, rest = nnx.split(
        nnx.eval_shape(lambda: self._build(jax.random.key(0))), nnx.Param, nnx.BatchStat, ...)
    nnx.replace_by_pure_dict(params, _keyed_like(variables["params"], nnx.to_pure_dict(params)))
    if stats:
      nnx.replace_by_pure_dict(stats, _keyed_like(variables["batch_stats"],
                                                  nnx.to_pure_dict(stats)))
    nnx.replace_by_pure_dict(rest, _fresh_rng_state(nnx.to_pure_dict(rest), rngs))
    module = nnx.merge(graphdef, params, stats, rest)
    module.train() if train else module.eval()
    logits = module(x)
    if not mutable:
      return logits
    return logits, ({"batch_stats": _pure(nnx.state(module, nnx.BatchStat))} if stats else {})

  def channel_groups(self):
    return None


def _pure(state) -> dict:
  """A State as a pure dict with string keys: NNX numbers list entries (`layers/0/kernel`),
  alphaprune's parameter paths are '/'-joined strings."""
  def strings(tree):
    return {str(k): strings(v) for k, v in tree.items()} if isinstance(tree, dict) else tree
  return strings(nnx.to_pure_dict(state))


def _keyed_like(pure: dict, template: dict) -> dict:
  """`pure` (string keys) with the keys of `template` (NNX's own pure dict) again."""
  if not isinstance(template, dict):
    return pure
  return {k: _keyed_like(pure[str(k)], v) for k, v in template.items()}


def _fresh_rng_state(abstract: Any, rngs) -> Any:
  """The module's RNG streams (dropout, …) from this call's key alone, counts at zero, so
  that randomness derives from (seed, step) like everything else in a run."""
  key = (rngs or {}).get("dropout", jax.random.key(0))
  leaves, treedef = jax.tree.flatten(abstract)
  return jax.tree.unflatten(treedef, [
      jax.random.fold_in(key, i) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
      else jnp.zeros(leaf.shape, leaf.dtype) for i, leaf in enumerate(leaves)])
