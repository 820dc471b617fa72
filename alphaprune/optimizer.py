"""The optax chain: base optimizer, plateau scaling, frozen teacher, masked student.

Trainable parameters are `{"teacher", "student", "shared"}` (see blend.py).
The learning-rate scale comes from `optax.contrib.reduce_on_plateau`, whose
state sits inside the chain. Within a step it only scales the updates; it
observes the *validation* loss once per epoch (`observe_validation_loss`),
and a new α-stage re-initialises it (`reset_stage`), restoring the initial
learning rate. Call the chain with the masks:
`tx.update(grads, opt_state, params, masks=masks)`.

Plateau semantics are Keras's ReduceLROnPlateau (mode "min", absolute
`min_delta`): after `patience` epochs without an improvement larger than
`min_delta`, lr ← max(lr·factor, min_lr), then `cooldown` epochs are ignored.
Keras counts the last cooldown epoch as a normal one, optax does not, so
optax's cooldown is set to `cooldown − 1` (a test checks the sequences agree).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import ReduceLROnPlateauState, reduce_on_plateau

from alphaprune import blending

OPTIMIZERS = ("sgd", "adam")


class Optimizer(NamedTuple):
  tx: optax.GradientTransformationExtraArgs  # the per-step chain
  plateau: optax.GradientTransformationExtraArgs  # its reduce_on_plateau element
  learning_rate: float


def _scale_by_plateau(plateau: optax.GradientTransformationExtraArgs):
  """Multiplies updates by the plateau's current scale; its state changes per epoch only."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: state.scale * u, updates), state

  return optax.GradientTransformationExtraArgs(plateau.init, update_fn)


def _keep_pruned_at_zero():
  """Zeroes the student's updates where its mask is 0 (pruned weights never move)."""

  def update_fn(updates, state, params=None, *, masks, **extra_args):
    del params, extra_args
    return {**updates, "student": blending.apply_masks(updates["student"], masks)}, state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(*, optimizer: str = "sgd", learning_rate: float = 1e-3,
                   momentum: float = 0.9, factor: float = 0.1, patience: int = 10,
                   cooldown: int = 0, min_delta: float = 1e-4, min_lr: float = 0.0,
                   teacher_trainable: bool = False, pruned_fixed: bool = True) -> Optimizer:
  """Builds the whole chain for `{"teacher", "student", "shared"}` parameters. With
  `pruned_fixed` (every method but `soft`) the student's pruned weights never move.

  A plateau cut scales the whole update, so with SGD the momentum's
  contribution is scaled at once too (as in optax and PyTorch); Keras's SGD
  keeps the old rate inside its velocity, which fades over a few steps.
  """
  _check_plateau(learning_rate, factor, patience, cooldown, min_delta, min_lr)
  if optimizer == "sgd":
    base = optax.sgd(learning_rate, momentum=momentum or None)
  elif optimizer == "adam":
    base = optax.adam(learning_rate)
  else:
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
  plateau = reduce_on_plateau(factor=factor, patience=patience, rtol=0.0, atol=min_delta,
                              cooldown=max(cooldown - 1, 0),
                              min_scale=min_lr / learning_rate)
  train = optax.chain(base, _scale_by_plateau(plateau))

  def labels(params):
    return {part: jax.tree.map(
        lambda _: "frozen" if part == "teacher" and not teacher_trainable else "train", sub)
        for part, sub in params.items()}

  tx = optax.chain(optax.multi_transform({"train": train, "frozen": optax.set_to_zero()},
                                         labels),
                   _keep_pruned_at_zero() if pruned_fixed else optax.identity())
  return Optimizer(tx, plateau, learning_rate)


def _check_plateau(learning_rate, factor, patience, cooldown, min_delta, min_lr) -> None:
  """One-line ValueErrors for settings that would make the plateau rule misbehave."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate} must be > 0")
  if not 0 < factor < 1:
    raise ValueError(f"factor={factor} must be in (0, 1): a cut must lower the rate")
  if int(patience) != patience or patience < 1:
    raise ValueError(f"patience={patience} must be a whole number >= 1 (with 0 the rate "
                     "would be cut after improving epochs too)")
  if int(cooldown) != cooldown or cooldown < 0:
    raise ValueError(f"cooldown={cooldown} must be a whole number >= 0")
  if not min_delta > 0:
    raise ValueError(f"min_delta={min_delta} must be > 0 (e.g. 1e-4): the smallest change "
                     "that counts as an improvement")
  if not 0 <= min_lr < learning_rate:
    raise ValueError(f"min_lr={min_lr} must be in [0, learning_rate={learning_rate}) (a "
                     "larger one would raise the rate on the first plateau)")


def _is_plateau(x) -> bool:
  return isinstance(x, ReduceLROnPlateauState)


def _map_plateau(fn, opt_state):
  return jax.tree.map(lambda s: fn(s) if _is_plateau(s) else s, opt_state, is_leaf=_is_plateau)


def observe_validation_loss(opt: Optimizer, opt_state, value):
  """One epoch's plateau update from the validation loss (jittable)."""
  return _map_plateau(lambda s: opt.plateau.update((), s, value=value)[1], opt_state)


def lr_scale(opt_state) -> jax.Array:
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
  return states[0].scale


def reset_stage(opt: Optimizer, opt_state, params, clear_momentum: bool = False):
  """New α-stage: the initial learning rate again (and, if asked, no momentum)."""
  if clear_momentum:
    return opt.tx.init(params)
  fresh = opt.plateau.init(params)
  return _map_plateau(lambda s: jax.tree.map(jnp.asarray, fresh), opt_state)
