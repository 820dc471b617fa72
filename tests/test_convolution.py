"""Our CPU convolution and pooling against XLA's: equal values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alphaprune import convolution

CASES = [  # (H, W, C, O, kernel, strides, padding)
    (28, 28, 1, 6, (5, 5), (1, 1), "SAME"),  # LeNet-5 conv1: the one-channel forward
    (14, 14, 6, 16, (5, 5), (1, 1), "VALID"),  # LeNet-5 conv2
    (8, 8, 4, 8, (3, 3), (2, 2), "SAME"),  # ResNet's strided conv
    (7, 9, 4, 8, (1, 1), (2, 2), "SAME"),  # projection shortcut, odd sizes
    (9, 7, 3, 5, (3, 2), (2, 1), "SAME"),  # uneven kernel and strides
    (6, 6, 2, 3, (3, 3), (1, 1), ((2, 0), (1, 3))),  # explicit, asymmetric padding
]


@pytest.mark.parametrize("banded", [True, False], ids=["banded", "im2col"])
@pytest.mark.parametrize("h,w,c,o,kernel,strides,padding", CASES)
def test_conv_equals_xla_values_and_both_gradients(h, w, c, o, kernel, strides, padding,
                                                   banded, monkeypatch):
  """Both formulations, whichever the layer would pick."""
  monkeypatch.setattr(convolution, "_banded_is_cheaper", lambda *_: banded)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, h, w, c)).astype(np.float32)
  k = rng.normal(size=kernel + (c, o)).astype(np.float32)

  @jax.jit
  def outputs_and_gradients(x, k):
    out = {}
    for name, conv in (("xla", lax.conv_general_dilated),
                       ("ours", convolution.conv_general_dilated)):
      y, vjp = jax.vjp(lambda x, k: conv(x, k, strides, padding,
                                         dimension_numbers=convolution.NHWC), x, k)
      out[name] = (y, *vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)))
    return out

  out = outputs_and_gradients(x, k)
  for ours, xla in zip(out["ours"], out["xla"]):  # y, then ∂/∂x, then ∂/∂k
    assert ours.shape == xla.shape
    np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-4)


def test_each_layer_gets_the_cheaper_formulation():
  """Banded matmuls for narrow images (LeNet-5's two convolutions), im2col for wide ones
  with many channels (VGG's) and for the small first layers of the cnn."""
  cheaper = lambda x, k, s=(1, 1), p=((0, 0), (0, 0)): convolution._banded_is_cheaper(
      (1,) + x, k, s, p)
  assert cheaper((28, 28, 1), (5, 5, 1, 6), p=((2, 2), (2, 2)))
  assert cheaper((14, 14, 6), (5, 5, 6, 16))
  assert not cheaper((32, 32, 16), (3, 3, 16, 32), p=((1, 1), (1, 1)))
  assert not cheaper((28, 28, 1), (3, 3, 1, 16), p=((1, 1), (1, 1)))


def test_flax_conv_takes_it_with_the_same_parameters_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 10, 10, 3))
  xla = nn.Conv(4, (3, 3), strides=2)
  ours = nn.Conv(4, (3, 3), strides=2, conv_general_dilated=convolution.conv_general_dilated)
  variables = xla.init(jax.random.key(1), x)
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  np.testing.assert_allclose(ours.apply(variables, x), xla.apply(variables, x), atol=1e-5)


def test_dilated_convolutions_fall_back_to_xla():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
  k = jax.random.normal(jax.random.key(1), (3, 3, 2, 2))
  args = dict(rhs_dilation=(2, 2), dimension_numbers=convolution.NHWC)
  np.testing.assert_array_equal(convolution.conv_general_dilated(x, k, (1, 1), "SAME", **args),
                                lax.conv_general_dilated(x, k, (1, 1), "SAME", **args))


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 5, 3)])
def test_max_pool_equals_flax_values_and_gradients(shape, tied):
  """Each window's gradient goes to its first maximum, as flax's (select-and-scatter) does,
  also where maxima tie (ReLU's zeros, small integers)."""
  x = jax.random.normal(jax.random.key(0), shape)
  if tied:
    x = jnp.round(jax.nn.relu(x))
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(convolution.max_pool_2x2(x), flax_pool(x))
  g = jax.random.normal(jax.random.key(1), flax_pool(x).shape)
  grad = lambda fn: jax.grad(lambda x: jnp.sum(fn(x) * g))(x)
  np.testing.assert_array_equal(grad(convolution.max_pool_2x2), grad(flax_pool))