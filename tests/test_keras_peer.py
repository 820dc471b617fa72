"""The bench's Keras peer computes α·op(x; W_t) + (1−α)·op(x; M⊙W_s) + b with a magnitude mask."""

import numpy as np
import pytest

keras_peer = pytest.importorskip("alphaprune.bench.keras_peer")
keras = keras_peer.keras


def _weights(layer):
  return [keras.ops.convert_to_numpy(w) for w in (layer.teacher, layer.student, layer.mask,
                                                  layer.bias)]


def test_blended_dense_and_conv_are_the_two_branch_formula():
  from jax import lax

  from alphaprune import convolution
  rng = np.random.default_rng(0)
  dense = keras_peer.BlendedDense(5, alpha=0.3, keep=0.35)
  x = rng.normal(size=(2, 7)).astype(np.float32)
  y = keras.ops.convert_to_numpy(dense(x))
  t, s, m, b = _weights(dense)
  np.testing.assert_allclose(y, 0.3 * x @ t + 0.7 * x @ (s * m) + b, atol=1e-5)
  # The mask keeps the teacher's largest 35% of weights.
  assert m.sum() == round(0.35 * m.size) and np.abs(t[m > 0]).min() >= np.abs(t[m == 0]).max()

  conv = keras_peer.BlendedConv2D(4, 5, "valid", alpha=0.6, keep=0.35, activation="relu")
  x = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
  y = keras.ops.convert_to_numpy(conv(x))
  t, s, m, b = _weights(conv)
  op = lambda k: np.asarray(lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                     dimension_numbers=convolution.NHWC))
  np.testing.assert_allclose(y, np.maximum(0.6 * op(t) + 0.4 * op(s * m) + b, 0), atol=1e-4)


def test_plain_and_blended_peers_have_the_models_sizes():
  plain, blended = keras_peer.build("lenet5", False), keras_peer.build("lenet5", True)
  assert plain.count_params() == 61_706  # LeNet-5 with 28×28 inputs, as models.LeNet5
  # Each blended layer adds a student and a mask of its kernel's size, and its α.
  branches = [l for l in blended.layers if hasattr(l, "teacher")]
  kernels = sum(int(np.prod(l.teacher.shape)) for l in branches)
  assert len(branches) == 5
  assert blended.count_params() == plain.count_params() + 2 * kernels + len(branches)
  with pytest.raises(ValueError, match="no Keras peer"):
    keras_peer.build("vgg", True)
