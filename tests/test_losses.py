import jax.numpy as jnp
import numpy as np
import pytest

from alphaprune import losses

LOGITS = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
LABELS = jnp.array([1, 0])


def test_cross_entropy_by_hand():
  ce = losses.cross_entropy(LOGITS, LABELS)
  want0 = -2.0 + np.log(np.exp(1) + np.exp(2) + 1)
  want1 = -0.0 + np.log(2 + np.exp(3))
  np.testing.assert_allclose(ce, [want0, want1], rtol=1e-6)


def test_mse_reductions_by_hand():
  targets = jnp.array([[0.0, 2.0, 2.0], [1.0, 0.0, 3.0]])
  # squared errors: [[1, 0, 4], [1, 0, 0]]
  mean, err = losses.mse(LOGITS, targets, "mean")
  np.testing.assert_allclose(mean, [5 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(err, [[1, 0, 4], [1, 0, 0]])
  total, _ = losses.mse(LOGITS, targets, "sum")
  np.testing.assert_allclose(total, [5, 1], rtol=1e-6)
  var = jnp.array([1.0, 2.0, 4.0])
  per, per_err = losses.mse(LOGITS, targets, "per_logit", var)
  np.testing.assert_allclose(per, [(1 + 0 + 1) / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(per_err, [[1, 0, 1], [1, 0, 0]])
  with pytest.raises(ValueError):
    losses.mse(LOGITS, targets, "per_logit")


def test_regression_against_labels_uses_one_hot():
  loss, _ = losses.loss_fn("regression", LOGITS, LABELS, target="labels", reduction="sum")
  # one-hot targets [[0,1,0],[1,0,0]] → errors [[1,1,0],[1,0,9]]
  np.testing.assert_allclose(loss, [2, 10], rtol=1e-6)


def test_distillation_by_hand():
  teacher = jnp.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
  t = 2.0
  got = losses.distillation(LOGITS, teacher, LABELS, temperature=t, weight=0.7)
  p = np.exp(np.asarray(teacher) / t); p /= p.sum(-1, keepdims=True)
  q = np.exp(np.asarray(LOGITS) / t); q /= q.sum(-1, keepdims=True)
  kl = (p * np.log(p / q)).sum(-1)
  ce = np.asarray(losses.cross_entropy(LOGITS, LABELS))
  np.testing.assert_allclose(got, 0.7 * t * t * kl + 0.3 * ce, rtol=1e-5)
  # identical logits: no KL left, only the cross-entropy part
  same = losses.distillation(teacher, teacher, LABELS, temperature=t, weight=1.0)
  np.testing.assert_allclose(same, [0, 0], atol=1e-6)
