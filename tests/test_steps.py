"""steps: evaluation sums (loss, accuracy, NLL and calibration) counted by hand."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from alphaprune import devices, losses, steps


class Pixels(nn.Module):
  """Logits are the input's pixels: a model whose outputs the test chooses exactly."""

  @nn.compact
  def __call__(self, x, train=False, alpha=None):
    return x.reshape((x.shape[0], -1))


def test_nll_and_expected_calibration_error_by_hand():
  logits = np.array([[4, 0, 0], [0, 2, 1], [1, 1, 0], [0, 0, 3], [2, 2, 2], [5, 1, 0]], np.uint8)
  labels = np.array([0, 2, 1, 2, 1, 0], np.int32)
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last is padding
  batch = {"image": logits.reshape(6, 1, 1, 3), "label": labels, "mask": mask}
  cfg = steps.StepConfig(model=Pixels(), loss=losses.Loss(), mean=(0.0,), std=(1 / 255,),
                         mesh=devices.make_mesh())
  metrics = steps.metrics_of(steps.batch_totals({}, None, batch, {}, cfg))
  # By hand: softmax, the label's −log p, and 15 confidence bins of width 1/15.
  z = logits[:5].astype(np.float64)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  nll = -np.log(p[np.arange(5), labels[:5]])
  confidence, correct = p.max(1), (p.argmax(1) == labels[:5]).astype(float)
  bins = np.minimum((confidence * 15).astype(int), 14)
  ece = sum(abs(correct[bins == b].sum() - confidence[bins == b].sum()) for b in set(bins)) / 5
  assert metrics["count"] == 5
  assert metrics["accuracy"] == pytest.approx(correct.mean())  # argmax ties: the first
  assert metrics["loss"] == pytest.approx(nll.mean(), rel=1e-5)  # cross-entropy: the NLL
  assert metrics["nll"] == pytest.approx(nll.mean(), rel=1e-5)
  assert metrics["ece"] == pytest.approx(ece, rel=1e-5)
  assert 0 < ece < 1 and len(set(bins)) > 2  # several bins, not a degenerate case
