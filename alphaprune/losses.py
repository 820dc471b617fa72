"""Losses on logits, per example: a training step takes their mean, evaluation
a masked mean, so a padded last batch counts each example exactly once."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

KINDS = ("classification", "regression", "distillation")
TARGETS = ("teacher", "labels")
REDUCTIONS = ("mean", "sum", "per_logit")


def cross_entropy(logits, labels):
  """Softmax cross-entropy against integer labels, [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def mse(logits, targets, reduction: str = "mean", target_var=None):
  """Squared error of logits against targets: ([B] loss, [B, K] per-logit errors).

  `mean` averages over the K logits, `sum` sums them (the batch is always
  averaged); `per_logit` divides each logit's error by its target variance
  `target_var` [K] first, so every logit weighs the same, then averages.
  """
  err = jnp.square(logits - targets)
  if reduction == "mean":
    return jnp.mean(err, -1), err
  if reduction == "sum":
    return jnp.sum(err, -1), err
  if reduction == "per_logit":
    if target_var is None:
      raise ValueError("the per_logit reduction needs the targets' variance per logit")
    err = err / target_var
    return jnp.mean(err, -1), err
  raise ValueError(f"unknown loss.reduction {reduction!r}; choose one of {REDUCTIONS}")


def distillation(logits, teacher_logits, labels, temperature: float = 4.0,
                 weight: float = 0.5):
  """weight·T²·KL(softmax(t/T) ‖ softmax(z/T)) + (1 − weight)·cross-entropy, [B]."""
  t = temperature
  log_p_teacher = jax.nn.log_softmax(teacher_logits / t)
  log_p_student = jax.nn.log_softmax(logits / t)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return weight * t * t * kl + (1.0 - weight) * cross_entropy(logits, labels)


def loss_fn(kind: str, logits, labels, teacher_logits=None, *, target: str = "teacher",
            reduction: str = "mean", target_var=None, temperature: float = 4.0,
            distill_weight: float = 0.5):
  """The configured loss per example: ([B], [B, K] per-logit errors or None)."""
  if kind == "classification":
    return cross_entropy(logits, labels), None
  if kind == "regression":
    if target == "teacher":
      targets = teacher_logits
    else:
      targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return mse(logits, targets, reduction, target_var)
  if kind == "distillation":
    return distillation(logits, teacher_logits, labels, temperature, distill_weight), None
  raise ValueError(f"unknown loss.kind {kind!r}; choose one of {KINDS}")


@dataclasses.dataclass(frozen=True)
class Loss:
  """The configured loss (`config.loss`), as one hashable value a jitted step can take."""

  kind: str = "classification"
  target: str = "teacher"
  reduction: str = "mean"
  temperature: float = 4.0
  distill_weight: float = 0.5

  def per_example(self, logits, labels, teacher_logits=None, target_var=None):
    """([B] losses, [B, K] per-logit errors or None)."""
    return loss_fn(self.kind, logits, labels, teacher_logits, target=self.target,
                   reduction=self.reduction, target_var=target_var,
                   temperature=self.temperature, distill_weight=self.distill_weight)

  @property
  def needs_teacher_logits(self) -> bool:
    return needs_teacher_logits(self.kind, self.target)

  @property
  def per_logit(self) -> bool:
    """Whether the loss needs the targets' variance over the training set (`target_var`)."""
    return self.kind == "regression" and self.reduction == "per_logit"


def needs_teacher_logits(kind: str, target: str) -> bool:
  return kind == "distillation" or (kind == "regression" and target == "teacher")


def target_variance(target: str, train_teacher_logits, labels, num_classes: int) -> np.ndarray:
  """Per-logit variance of the regression targets over the training set (the per_logit
  reduction's `target_var`): of the teacher's logits, or of the one-hot labels."""
  if target == "teacher":
    return np.var(train_teacher_logits, axis=0) + 1e-8
  frequency = np.bincount(labels, minlength=num_classes) / len(labels)
  return frequency * (1 - frequency) + 1e-8
