"""A neighbour module, imported by models_vit.py as part of its package."""

import flax.linen as nn


class MlpBlock(nn.Module):
  mlp_dim: int

  @nn.compact
  def __call__(self, inputs, *, deterministic):
    x = nn.gelu(nn.Dense(self.mlp_dim)(inputs))
    x = nn.Dropout(rate=0.1)(x, deterministic=deterministic)
    return nn.Dense(inputs.shape[-1])(x)
