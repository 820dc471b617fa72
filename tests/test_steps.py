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


@pytest.mark.parametrize("name", ["lenet5", "vit"])
def test_bfloat16_compute_puts_the_step_s_dots_in_bfloat16_and_keeps_the_state_float32(name):
  import jax

  from alphaprune import blending, masks as masks_lib, models, optimizer
  kwargs = {"dim": 16, "depth": 1, "num_heads": 2, "patch": 7} if name == "vit" else {}
  model = models.make_model({"name": name, **kwargs}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.35)
  params, model_state, masks = blending.init_params("layer", jax.random.key(1), variables, masks)
  tx = optimizer.make_optimizer(optimizer="adam", learning_rate=1e-3).tx
  batch = {"image": np.zeros((8, 28, 28, 1), np.uint8), "label": np.zeros(8, np.int32)}
  programs = {}
  for dtype in steps.COMPUTE_DTYPES:
    cfg = steps.StepConfig(model=model, loss=losses.Loss(), mean=(0.5,), std=(0.25,),
                           mesh=devices.make_mesh(), tx=tx, batch_size=8, compute_dtype=dtype)
    state = steps.init_state(params, model_state, masks, tx, 0)
    step = jax.jit(lambda s, b, cfg=cfg: steps.train_step(s, b, {}, cfg))
    programs[dtype] = step.lower(state, batch).as_text()
    new_state, _ = step(state, batch)
    assert {leaf.dtype for leaf in jax.tree.leaves(new_state.params)} == {np.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(new_state.opt_state)
            if jnp.issubdtype(leaf.dtype, jnp.floating)} == {np.dtype("float32")}
  dots = lambda text: [line for line in text.splitlines()
                       if "stablehlo.dot_general" in line or "stablehlo.convolution" in line]
  # Every matmul and convolution, forward and backward, takes bfloat16 operands when asked.
  assert dots(programs["bfloat16"]) and all(
      "xbf16>" in line and "xf32>" not in line.split("->")[0] for line in dots(programs["bfloat16"]))
  assert not any("bf16" in line for line in dots(programs["float32"]))
