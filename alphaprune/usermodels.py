"""Your own Flax model, by import path and unchanged, behind the interface the built-ins have.

`model.name` may be `package.module:Name` or `path/to/file.py:Name` (relative to the working
directory), naming a Linen or an NNX module class, or a `functools.partial` of one (flax's
`ResNet18 = partial(ResNet, ...)`). A file's own folder is importable from it (and, inside a
package, the package: `from vit_jax import models_resnet` works). What is accepted:

* **Constructor.** Built with `model.kwargs` (nested dicts arrive as frozen, attribute-style
  `FrozenConfigDict`s, lists as tuples: hashable, as jit needs), with `num_classes=` when it
  takes one; one that takes none is used when its output width is the dataset's classes.
  NNX modules get `rngs=nnx.Rngs(...)`.
* **Call.** Images arrive NHWC, normalised. `train=` is passed when `__call__` takes it
  (positionally or keyword-only); NNX modules are also switched with `.train()`/`.eval()`
  and get `rngs=` at call time when their `__call__` takes it. Dropout draws from the step's
  key (seed, step), so a resumed run draws what an uninterrupted one would.
* **Statistics.** Batch norm updates its statistics in training only; a BatchNorm with an
  `axis_name` (written for `pmap`) runs with that axis bound over the whole global batch.
* **Outputs.** One array of logits, [batch, classes].

`check()`, the preflight, builds the model and traces init and apply (train on and off)
abstractly on one batch, and turns every broken convention into one line (exit 2) before
anything is written. Either way the driver sees Linen-style variables,
`{"params": ..., "batch_stats": ...}`, with `init(key, x)` and
`apply(variables, x, train=, alpha=, mutable=, rngs=)`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


class UserModelError(ValueError):
  """The named model cannot be loaded or breaks a convention (one line; exit code 2)."""


def is_user_model(name: str) -> bool:
  return ":" in str(name)


def _module_classes(module) -> list[str]:
  return sorted(name for name, value in vars(module).items() if _module_class(value) is not None)


def _module_class(value) -> type | None:
  """The Linen or NNX class `value` is (or is a partial of), else None."""
  cls = value.func if isinstance(value, functools.partial) else value
  if inspect.isclass(cls) and issubclass(cls, (nn.Module, nnx.Module)):
    return cls
  return None


def _import_file(path: str):
  """The module of a .py file, with its folder importable from it; inside a package (a folder
  with __init__.py), imported as package.module so that its package's imports work."""
  folder, root = os.path.dirname(path), os.path.dirname(path)
  dotted = [os.path.splitext(os.path.basename(path))[0]]
  while os.path.exists(os.path.join(root, "__init__.py")):
    dotted.insert(0, os.path.basename(root))
    root = os.path.dirname(root)
  for entry in (folder, root):
    if entry not in sys.path:
      sys.path.insert(0, entry)
  if len(dotted) > 1:
    return importlib.import_module(".".join(dotted))
  key = "alphaprune_user_" + hashlib.sha1(path.encode()).hexdigest()[:12]
  if key not in sys.modules:  # one module object per file: its classes compare equal
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[key]
      raise
  return sys.modules[key]


def load_class(spec: str):
  """The class (or partial of one) `spec` names: `package.module:Name` or
  `path/to/file.py:Name`."""
  where, _, name = spec.rpartition(":")
  try:
    if where.endswith(".py"):
      path = os.path.abspath(where)
      if not os.path.exists(path):
        raise FileNotFoundError(f"no file {path}")
      module = _import_file(path)
    else:
      module = importlib.import_module(where)
  except Exception as e:  # anything an import can raise
    raise UserModelError(f"model.name={spec!r} cannot be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); use "
                         "package.module:Name or path/to/file.py:Name") from None
  if not hasattr(module, name):
    raise UserModelError(f"model.name={spec!r}: {where} has no {name!r} (AttributeError); its "
                         f"Flax module classes are {_module_classes(module) or 'none'}")
  value = getattr(module, name)
  if _module_class(value) is None:
    raise UserModelError(f"model.name={spec!r} is not a Flax Linen or NNX module class (nor a "
                         f"functools.partial of one); {where}'s are "
                         f"{_module_classes(module) or 'none'}")
  return value


def frozen(value):
  """A model.kwargs value as a constructor can hold it and jit can hash: nested dicts become
  FrozenConfigDicts (attribute access, as ml_collections configs), lists tuples."""
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return ml_collections.FrozenConfigDict({key: frozen(item) for key, item in dict(value).items()})
  if isinstance(value, (list, tuple)):
    return tuple(frozen(item) for item in value)
  return value


def _parameters(factory) -> dict:
  """The constructor's parameters (a partial's bound ones left out)."""
  cls = _module_class(factory)
  params = dict(inspect.signature(cls.__init__).parameters)  # NNX's metaclass hides cls's
  params.pop("self", None)
  if isinstance(factory, functools.partial):
    for key in factory.keywords:
      params.pop(key, None)
  params.pop("parent", None)
  params.pop("name", None)
  return params


def make(spec: str, num_classes: int, kwargs: dict | None = None):
  """The user's model, ready for the driver (not yet checked: see `check`)."""
  factory = load_class(spec)
  if isinstance(factory, functools.partial):  # flax's `ResNet18 = partial(ResNet, [2, 2, ...])`
    factory = functools.partial(factory.func, *map(frozen, factory.args),
                                **{key: frozen(value) for key, value in factory.keywords.items()})
  kwargs = {key: frozen(value) for key, value in dict(kwargs or {}).items()}
  params = _parameters(factory)
  unknown = [key for key in kwargs if key not in params and not any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())]
  if unknown:
    accepted = [key for key in params if key not in ("rngs", "num_classes")]
    raise UserModelError(f"model.kwargs has {unknown[0]!r}, which {spec} does not take; it "
                         f"takes {accepted or 'nothing else'}")
  if "num_classes" in params:
    kwargs["num_classes"] = num_classes
  if issubclass(_module_class(factory), nnx.Module):
    return NNXModel(factory, tuple(sorted(kwargs.items())), _call_arguments(factory))
  try:
    module = factory(**kwargs)
  except TypeError as e:
    raise UserModelError(f"{spec} cannot be built with model.kwargs {sorted(kwargs)}: "
                         f"{str(e).splitlines()[0]}") from None
  return LinenModel(module, "train" in _call_arguments(factory))


def _call_arguments(factory) -> tuple[str, ...]:
  return tuple(inspect.signature(_module_class(factory).__call__).parameters)


def _bound(axis_names: tuple[str, ...], fn, x):
  """fn(x) with each of `axis_names` bound to a one-element axis around the whole batch: a
  BatchNorm written for pmap (`axis_name='batch'`) then reduces over the global batch."""
  if not axis_names:
    return fn(x)
  for name in axis_names:
    fn = jax.vmap(fn, axis_name=name)
    x = x[None]
  out = fn(x)
  for _ in axis_names:
    out = jax.tree.map(lambda leaf: leaf[0], out)
  return out


@dataclasses.dataclass(frozen=True)
class LinenModel:
  """A user's Linen module (hashable: a static jit argument)."""

  module: nn.Module
  takes_train: bool
  axis_names: tuple[str, ...] = ()  # BatchNorm axis names bound over the batch

  def _train(self, train: bool) -> dict:
    return {"train": train} if self.takes_train else {}

  def init(self, key, x) -> dict:
    rngs = {"params": key, "dropout": jax.random.fold_in(key, 1)}
    return dict(_bound(self.axis_names, lambda x: self.module.init(rngs, x, **self._train(False)),
                       x))

  def apply(self, variables, x, train: bool = False, alpha=None, mutable=False, rngs=None):
    del alpha  # the layer form needs nothing from the model
    return _bound(self.axis_names, lambda x: self.module.apply(
        variables, x, mutable=mutable, rngs=rngs, **self._train(train)), x)

  def channel_groups(self):
    return None  # unknown topology: filter masks prune output channels only


@dataclasses.dataclass(frozen=True)
class NNXModel:
  """A user's NNX module class, seen through pure dicts of its Param and BatchStat state."""

  factory: Any  # the class, or a partial of it
  kwargs: tuple = ()  # sorted (name, value) pairs: hashable
  call_arguments: tuple[str, ...] = ()
  axis_names: tuple[str, ...] = ()

  def _build(self, key):
    return self.factory(**dict(self.kwargs), rngs=nnx.Rngs(key))

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

    def call(x):
      module = nnx.merge(graphdef, params, stats, rest)
      module.train() if train else module.eval()
      extra = {"train": train} if "train" in self.call_arguments else {}
      if "rngs" in self.call_arguments:
        extra["rngs"] = nnx.Rngs(dropout=(rngs or {}).get("dropout", jax.random.key(0)))
      logits = module(x, **extra)
      new_stats = _pure(nnx.state(module, nnx.BatchStat)) if stats else None
      return logits, new_stats

    logits, new_stats = _bound(self.axis_names, call, x)
    if not mutable:
      return logits
    return logits, ({"batch_stats": new_stats} if stats else {})

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


# ------------------------------------------------------------------ the preflight

_UNBOUND = re.compile(r"unbound axis name: (\S+?)\.? ")


def check(model, spec: str, image_shape, num_classes: int):
  """The preflight: `model` built, initialised and applied (train on and off) abstractly on
  a batch of two, every broken convention a one-line UserModelError. Returns the model,
  with any BatchNorm axis names bound."""
  x = jax.ShapeDtypeStruct((2,) + tuple(image_shape), jnp.float32)
  try:
    hash(model)
  except TypeError as e:
    raise UserModelError(f"{spec} has an unhashable attribute ({_first_line(e)[:120]}); jit "
                         "needs hashable module fields: use tuples, not lists or dicts") from None
  for _ in range(4):  # bind each BatchNorm axis name the model asks for
    try:
      _trace(model, spec, x, num_classes)
      return model
    except NameError as e:
      found = _UNBOUND.search(str(e) + " ")
      if not found:
        raise UserModelError(f"{spec} cannot be traced: {_first_line(e)}") from None
      model = dataclasses.replace(model, axis_names=model.axis_names + (found.group(1),))
  raise UserModelError(f"{spec} asks for more axis names than it can be given: "
                       f"{model.axis_names}")


def _trace(model, spec, x, num_classes) -> None:
  """init, then apply in training and in evaluation, abstractly; NameError (an unbound axis
  name) passes through for `check` to bind it."""
  try:
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
  except NameError:
    raise
  except Exception as e:  # anything a user's constructor or init can raise
    raise UserModelError(f"{spec} cannot be initialised on {tuple(x.shape[1:])} images: "
                         f"{type(e).__name__}: {_first_line(e)}") from None
  collections = [name for name in variables if name != "params"]
  rngs = {"dropout": jax.random.key(0)}
  for train in (True, False):
    mutable = collections if train and collections else False
    try:
      out = jax.eval_shape(lambda v, x: model.apply(v, x, train=train, mutable=mutable,
                                                    rngs=rngs), variables, x)
    except NameError:
      raise
    except Exception as e:
      if "is immutable" in str(e) and not train:
        raise UserModelError(
            f"{spec} updates its batch statistics when evaluating: its __call__ takes no "
            "`train` argument, so its BatchNorm cannot tell training from evaluation; add "
            "`train: bool` and use_running_average=not train") from None
      raise UserModelError(f"{spec} cannot be applied ({'training' if train else 'evaluating'})"
                           f": {type(e).__name__}: {_first_line(e)}") from None
    _check_logits(spec, out[0] if mutable else out, num_classes)


def _check_logits(spec, logits, num_classes) -> None:
  if not hasattr(logits, "shape") or not hasattr(logits, "dtype"):
    raise UserModelError(f"{spec} returns a {type(logits).__name__}, not one array of logits; "
                         "return the logits alone, [batch, classes]")
  if tuple(logits.shape) != (2, num_classes) or not jnp.issubdtype(logits.dtype, jnp.floating):
    raise UserModelError(f"{spec} returns {logits.dtype}{list(logits.shape)} for a batch of 2; "
                         f"the dataset has {num_classes} classes: it must return float "
                         f"[batch, {num_classes}] logits (a model without num_classes must "
                         "output that many)")


def _first_line(error: BaseException) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  return lines[0][:300] if lines else type(error).__name__


def logits_kernels(model, variables, image_shape, paths, num_classes: int) -> list[str]:
  """The kernels among `paths` whose last axis is the logits' axis (the head's): moving one
  of their output columns moves that logit alone. Structured masks leave their outputs."""
  from alphaprune import tree

  x = jax.random.normal(jax.random.key(0), (4,) + tuple(image_shape))
  flat = tree.flatten(variables["params"])
  heads = []
  for path in paths:
    if flat[path].shape[-1] != num_classes:
      continue
    tangent = {key: jnp.zeros_like(value) for key, value in flat.items()}
    tangent[path] = tangent[path].at[..., 0].set(1.0)
    _, moved = jax.jvp(lambda p: model.apply({**variables, "params": tree.unflatten(p)}, x),
                       (flat,), (tangent,))
    moved = jnp.abs(moved).sum(0) > 0
    if bool(moved[0]) and not bool(moved[1:].any()):
      heads.append(path)
  return heads
