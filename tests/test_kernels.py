"""kernels: contracting axes read off the model's computation, Wanda's input norms by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import kernels, models


class Attentive(nn.Module):
  """A DenseGeneral projection into heads and back, as attention writes them."""

  @nn.compact
  def __call__(self, x, train=False, alpha=None):
    x = x.reshape((x.shape[0], 4, -1))  # 4 tokens
    heads = nn.DenseGeneral((2, 3), name="query")(x)  # kernel [features, 2, 3]
    back = nn.DenseGeneral(5, axis=(-2, -1), name="out")(heads)  # kernel [2, 3, 5]
    return nn.Dense(10, name="head")(back.mean(1))


def test_contracting_axes_are_those_of_the_dot_each_kernel_feeds():
  model = Attentive()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
  assert variables["params"]["query"]["kernel"].shape == (4, 2, 3)
  # query contracts its first axis only; out its first two (the default: all but the last)
  assert kernels.contracting_axes(model, variables, (4, 4, 1)) == {"query/kernel": (0,)}
  vit = models.make_model({"name": "vit", "depth": 1, "kwargs": {"dim": 8, "num_heads": 2}}, 10)
  vit_variables = vit.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  assert kernels.contracting_axes(vit, vit_variables, (8, 8, 1)) == {
      f"block1/attn/{name}/kernel": (0,) for name in ("query", "key", "value")}


def test_input_norms_are_each_input_features_norm_over_the_batch():
  model = Attentive()
  x = jax.random.normal(jax.random.key(1), (6, 4, 4, 1))
  variables = model.init(jax.random.key(0), x)
  norms = kernels.input_norms(model, variables, x)
  tokens = np.asarray(x).reshape(6, 4, 4)  # what query sees: 24 rows of 4 features
  np.testing.assert_allclose(norms["query/kernel"], np.linalg.norm(tokens.reshape(-1, 4), axis=0),
                             rtol=1e-5)
  heads = nn.DenseGeneral((2, 3)).apply({"params": variables["params"]["query"]}, tokens)
  np.testing.assert_allclose(norms["out/kernel"],
                             np.sqrt((np.asarray(heads) ** 2).sum((0, 1))), rtol=1e-5)
  assert norms["head/kernel"].shape == (5,)
