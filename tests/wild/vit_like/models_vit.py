"""Written as google-research/vision_transformer's vit_jax/models_vit.py writes its ViT."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vit_like import helpers


class Encoder1DBlock(nn.Module):
  mlp_dim: int
  num_heads: int

  @nn.compact
  def __call__(self, inputs, *, deterministic):
    x = nn.LayerNorm()(inputs)
    x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(x, x)
    x = x + inputs
    y = nn.LayerNorm()(x)
    return x + helpers.MlpBlock(mlp_dim=self.mlp_dim)(y, deterministic=deterministic)


class VisionTransformer(nn.Module):
  num_classes: int
  patches: Any
  transformer: Any
  hidden_size: int
  classifier: str = "token"

  @nn.compact
  def __call__(self, inputs, *, train):
    x = nn.Conv(self.hidden_size, self.patches.size, strides=self.patches.size,
                padding="VALID", name="embedding")(inputs)
    n, h, w, c = x.shape
    x = jnp.reshape(x, [n, h * w, c])
    cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], c))
    for _ in range(self.transformer.num_layers):
      x = Encoder1DBlock(self.transformer.mlp_dim, self.transformer.num_heads)(
          x, deterministic=not train)
    x = nn.LayerNorm(name="encoder_norm")(x)[:, 0]
    return nn.Dense(self.num_classes, name="head")(x)
