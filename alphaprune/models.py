"""Flax models: LeNet-300-100 (`mlp`), `lenet5`, a small `cnn`, CIFAR-style `vgg`, CIFAR
`resnet`, the ImageNet ResNets (`imagenet_resnet`, ResNet-18 to -152) and a vision
transformer (`vit`).

Convolutions and poolings go through `convolution` (fast on a CPU, XLA's own
elsewhere); parameters are those of `nn.Conv`.

Nothing here knows about pruning. Every model is a flat sequence of *units*
(linear op → optional batch norm → optional ReLU), each a direct child of the
model, so parameter paths read `<unit>/<conv|dense|bn>/<name>`. The one
concession to α-blending is `blend_form='block'`: each unit is then replaced by
a `BlockBlend` holding a `teacher` and a `student` copy of it, whose outputs
are mixed as α·teacher + (1−α)·student. In the default `layer` form `alpha` is
ignored and the model is an ordinary Flax module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alphaprune import convolution, usermodels
from alphaprune.masks import chain_groups

BLEND_FORMS = ("layer", "block")


@dataclasses.dataclass(frozen=True)
class UnitSpec:
  """One linear op with the normalisation and activation that follow it."""

  kind: str  # "conv" | "dense"
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: tuple[int, int] = (1, 1)
  padding: str = "SAME"
  norm: bool = False
  act: bool = True


class Unit(nn.Module):
  spec: UnitSpec

  @nn.compact
  def __call__(self, x, train: bool):
    s = self.spec
    if s.kind == "conv":
      x = nn.Conv(s.features, s.kernel_size, s.strides, padding=s.padding,
                  use_bias=not s.norm, name="conv",
                  conv_general_dilated=convolution.conv_general_dilated)(x)
    else:
      x = nn.Dense(s.features, use_bias=not s.norm, name="dense")(x)
    if s.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
    return nn.relu(x) if s.act else x


class BlockBlend(nn.Module):
  """Block form: α·teacher(x) + (1−α)·student(x), each branch a whole unit. A frozen
  teacher's unit runs in evaluation mode (its batch norm uses, and keeps, the statistics
  it was trained with), so nothing of its branch changes."""

  spec: UnitSpec
  freeze_teacher: bool = True

  @nn.compact
  def __call__(self, x, train: bool, alpha):
    teacher = Unit(self.spec, name="teacher")(x, train and not self.freeze_teacher)
    student = Unit(self.spec, name="student")(x, train)
    return alpha * teacher + (1.0 - alpha) * student


class _UnitModel(nn.Module):
  """Shared plumbing: `self._unit(name, spec, x)` in either blend form."""

  def _unit(self, name: str, spec: UnitSpec, x, train: bool, alpha):
    if self.blend_form == "block":
      return BlockBlend(spec, self.freeze_teacher, name=name)(
          x, train, 1.0 if alpha is None else alpha)
    return Unit(spec, name=name)(x, train)


def _pool(x):
  # SAME padding so 28×28 inputs survive VGG's five poolings (28→14→7→4→2→1).
  return convolution.max_pool_2x2(x)


def _dense(unit):
  return f"{unit}/dense/kernel"


def _conv(unit):
  return f"{unit}/conv/kernel"


class MLP(_UnitModel):
  """LeNet-300-100 (hidden sizes configurable)."""

  num_classes: int = 10
  hidden: Sequence[int] = (300, 100)
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  def channel_groups(self):
    """[(producer kernels, consumer kernels)] of channels that must be pruned together."""
    return chain_groups([_dense(f"fc{i + 1}") for i in range(len(self.hidden))] + [_dense("head")])

  def compact_fields(self, kept):
    """Model fields for the smaller model keeping `kept[group]` channels of each group."""
    return {"hidden": list(kept)}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = self._unit(f"fc{i + 1}", UnitSpec("dense", width), x, train, alpha)
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False),
                      x, train, alpha)


class LeNet5(_UnitModel):
  """LeNet-5: conv6(5×5) → pool → conv16(5×5) → pool → fc120 → fc84 → head."""

  num_classes: int = 10
  channels: Sequence[int] = (6, 16)
  fc: Sequence[int] = (120, 84)
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  def channel_groups(self):
    return chain_groups([_conv("conv1"), _conv("conv2"), _dense("fc1"), _dense("fc2"),
                   _dense("head")])

  def compact_fields(self, kept):
    return {"channels": list(kept[:2]), "fc": list(kept[2:])}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    x = self._unit("conv1", UnitSpec("conv", self.channels[0], (5, 5)), x, train, alpha)
    x = _pool(x)
    x = self._unit("conv2", UnitSpec("conv", self.channels[1], (5, 5), padding="VALID"),
                   x, train, alpha)
    x = _pool(x)
    x = x.reshape((x.shape[0], -1))
    x = self._unit("fc1", UnitSpec("dense", self.fc[0]), x, train, alpha)
    x = self._unit("fc2", UnitSpec("dense", self.fc[1]), x, train, alpha)
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False),
                      x, train, alpha)


class CNN(_UnitModel):
  """A small CNN with batch norm: conv3×3-BN-ReLU → pool per entry of `channels`, then the
  `fc` dense layers and the head (the `cnn` variant of configs/fashion_mnist.py)."""

  num_classes: int = 10
  channels: Sequence[int] = (16, 32)
  fc: Sequence[int] = (128,)
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  def channel_groups(self):
    return chain_groups([_conv(f"conv{i + 1}") for i in range(len(self.channels))]
                  + [_dense(f"fc{i + 1}") for i in range(len(self.fc))] + [_dense("head")])

  def compact_fields(self, kept):
    n = len(self.channels)
    return {"channels": list(kept[:n]), "fc": list(kept[n:])}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    for i, features in enumerate(self.channels):
      x = self._unit(f"conv{i + 1}", UnitSpec("conv", features, norm=True), x, train, alpha)
      x = _pool(x)
    x = x.reshape((x.shape[0], -1))
    for i, features in enumerate(self.fc):
      x = self._unit(f"fc{i + 1}", UnitSpec("dense", features), x, train, alpha)
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False),
                      x, train, alpha)


VGG_LAYOUTS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
}


class VGG(_UnitModel):
  """CIFAR-style VGG with batch norm: conv-BN-ReLU stacks, 5 poolings, one linear head."""

  num_classes: int = 10
  depth: int = 11
  width: float = 1.0  # channel multiplier
  widths: Sequence[int] | None = None  # explicit channels per conv (a compact export)
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  def _num_convs(self):
    return sum(1 for item in VGG_LAYOUTS[self.depth] if item != "M")

  def channel_groups(self):
    return chain_groups([_conv(f"conv{i + 1}") for i in range(self._num_convs())] + [_dense("head")])

  def compact_fields(self, kept):
    return {"widths": list(kept)}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    i = 0
    for item in VGG_LAYOUTS[self.depth]:
      if item == "M":
        x = _pool(x)
        continue
      i += 1
      features = (self.widths[i - 1] if self.widths is not None
                  else max(1, int(round(item * self.width))))
      x = self._unit(f"conv{i}", UnitSpec("conv", features, norm=True), x, train, alpha)
    x = x.reshape((x.shape[0], -1))
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False),
                      x, train, alpha)


class ResNet(_UnitModel):
  """CIFAR ResNet-(6n+2): 3 stages of n basic blocks, projection shortcuts."""

  num_classes: int = 10
  depth: int = 20
  width: float = 1.0  # channel multiplier: 16·width channels in stage 1, doubled per stage
  # Explicit widths (a compact export): each stage's residual stream, and the
  # inside of each block (between its conv1 and conv2), in block order.
  stage_widths: Sequence[int] | None = None
  inner_widths: Sequence[int] | None = None
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  @property
  def blocks_per_stage(self):
    if (self.depth - 2) % 6:
      raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 56, …), got {self.depth}")
    return (self.depth - 2) // 6

  def channel_groups(self):
    """Residual additions tie channels together. Rule: one group per stage's
    residual stream (the stem or the stage's projection, and every block's
    conv2, write it; every conv1 and projection reading it, or the head, lose
    the same input channels), and one group per block inside it (conv1 → conv2)."""
    n = self.blocks_per_stage
    groups = []
    for stage in range(1, 4):
      blocks = [f"s{stage}b{b}" for b in range(1, n + 1)]
      producers = [_conv("stem") if stage == 1 else _conv(f"s{stage}b1_proj")]
      producers += [_conv(f"{b}_conv2") for b in blocks]
      readers = blocks if stage == 1 else blocks[1:]
      consumers = [_conv(f"{b}_conv1") for b in readers]
      consumers += ([_conv(f"s{stage + 1}b1_conv1"), _conv(f"s{stage + 1}b1_proj")]
                    if stage < 3 else [_dense("head")])
      groups.append((producers, consumers))
    for stage in range(1, 4):
      for b in range(1, n + 1):
        groups.append(([_conv(f"s{stage}b{b}_conv1")], [_conv(f"s{stage}b{b}_conv2")]))
    return groups

  def compact_fields(self, kept):
    return {"stage_widths": list(kept[:3]), "inner_widths": list(kept[3:])}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    n = self.blocks_per_stage
    stage_widths = self.stage_widths or [max(1, int(round(16 * self.width))) * 2**s
                                         for s in range(3)]
    inner = self.inner_widths or [stage_widths[s] for s in range(3) for _ in range(n)]
    x = self._unit("stem", UnitSpec("conv", stage_widths[0], norm=True), x, train, alpha)
    for stage in range(3):
      features = stage_widths[stage]
      for block in range(n):
        name = f"s{stage + 1}b{block + 1}"
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        shortcut = x
        if strides != (1, 1) or x.shape[-1] != features:
          shortcut = self._unit(
              f"{name}_proj",
              UnitSpec("conv", features, (1, 1), strides, norm=True, act=False),
              x, train, alpha)
        y = self._unit(f"{name}_conv1",
                       UnitSpec("conv", inner[stage * n + block], strides=strides, norm=True),
                       x, train, alpha)
        y = self._unit(f"{name}_conv2",
                       UnitSpec("conv", features, norm=True, act=False),
                       y, train, alpha)
        x = nn.relu(y + shortcut)
    x = jnp.mean(x, axis=(1, 2))
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False),
                      x, train, alpha)


# depth: (block kind, blocks per stage)
IMAGENET_RESNET_LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
                           152: ("bottleneck", (3, 8, 36, 3))}


class ImageNetResNet(_UnitModel):
  """ResNet-18/34/50/101/152 for ImageNet (He et al. 2016; v1.5: a bottleneck block strides
  in its 3×3 convolution): 7×7/2 stem, 3×3/2 max-pool, four stages, projection shortcuts
  where the shape changes, global average pooling."""

  num_classes: int = 1000
  depth: int = 50
  width: float = 1.0  # channel multiplier: 64·width in the stem
  # Explicit widths (a compact export): the stem's output, each stage's residual stream,
  # and the inside of each block in block order (a bottleneck has two: after its conv1 and
  # after its conv2).
  stem_width: int | None = None
  stage_widths: Sequence[int] | None = None
  inner_widths: Sequence[int] | None = None
  blend_form: str = "layer"
  freeze_teacher: bool = True  # block form: the teacher's units in evaluation mode

  def _layout(self):
    """(block kind, blocks per stage, stem width, stage widths, inner widths)."""
    kind, blocks = IMAGENET_RESNET_LAYOUTS[self.depth]
    base = max(1, int(round(64 * self.width)))
    expansion, inside = (4, 2) if kind == "bottleneck" else (1, 1)
    stages = self.stage_widths or [base * 2**s * expansion for s in range(4)]
    inner = self.inner_widths or [base * 2**s for s, n in enumerate(blocks)
                                  for _ in range(n * inside)]
    return kind, blocks, self.stem_width or base, stages, inner

  @staticmethod
  def _projects(kind: str, stage: int, block: int) -> bool:
    """Whether a block has a projection shortcut: the first of a stage that strides or
    widens the stream (decided by the layout, not by the widths, so a compact export whose
    widths happen to match keeps its projections)."""
    return block == 0 and (stage > 0 or kind == "bottleneck")

  def channel_groups(self):
    """As the CIFAR ResNet's: one group per residual stream (its producers: the stage's
    projection and every block's last conv; its readers: every block's first conv and the
    next stage's projection, or the head), the stem's own output where a projection reads
    it (bottleneck) or else part of stage 1's stream, and one group inside each block per
    conv that feeds another."""
    kind, blocks = IMAGENET_RESNET_LAYOUTS[self.depth]
    convs = ("conv1", "conv2", "conv3") if kind == "bottleneck" else ("conv1", "conv2")
    names = [[f"s{s + 1}b{b + 1}" for b in range(n)] for s, n in enumerate(blocks)]
    stem_apart = self._projects(kind, 0, 0)
    groups = ([([_conv("stem")], [_conv("s1b1_conv1"), _conv("s1b1_proj")])]
              if stem_apart else [])
    for s, stage in enumerate(names):
      projects = self._projects(kind, s, 0)
      producers = ([_conv(f"{stage[0]}_proj")] if projects else [_conv("stem")])
      producers += [_conv(f"{b}_{convs[-1]}") for b in stage]
      consumers = [_conv(f"{b}_conv1") for b in (stage[1:] if projects else stage)]
      consumers += ([_conv(f"{names[s + 1][0]}_conv1"), _conv(f"{names[s + 1][0]}_proj")]
                    if s < 3 else [_dense("head")])
      groups.append((producers, consumers))
    for b in (b for stage in names for b in stage):
      groups += [([_conv(f"{b}_{a}")], [_conv(f"{b}_{z}")]) for a, z in zip(convs, convs[1:])]
    return groups

  def compact_fields(self, kept):
    kind, _ = IMAGENET_RESNET_LAYOUTS[self.depth]
    streams = 5 if self._projects(kind, 0, 0) else 4
    return {"stem_width": kept[0], "stage_widths": list(kept[streams - 4:streams]),
            "inner_widths": list(kept[streams:])}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    kind, blocks, stem, stages, inner = self._layout()
    x = self._unit("stem", UnitSpec("conv", stem, (7, 7), (2, 2), norm=True), x, train, alpha)
    x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    widths = iter(inner)
    for stage, n in enumerate(blocks):
      for block in range(n):
        name = f"s{stage + 1}b{block + 1}"
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        shortcut = x
        if self._projects(kind, stage, block):
          shortcut = self._unit(f"{name}_proj", UnitSpec("conv", stages[stage], (1, 1), strides,
                                                         norm=True, act=False),
                                x, train, alpha)
        x = nn.relu(self._block(kind, name, widths, stages[stage], strides, x, train, alpha)
                    + shortcut)
    x = jnp.mean(x, axis=(1, 2))
    return self._unit("head", UnitSpec("dense", self.num_classes, act=False), x, train, alpha)

  def _block(self, kind, name, widths, features, strides, x, train, alpha):
    """A block's residual branch: 1×1, 3×3 (strided), 1×1 (bottleneck) or 3×3 (strided),
    3×3 (basic); its inner widths drawn in order from `widths`."""
    if kind == "bottleneck":
      y = self._unit(f"{name}_conv1", UnitSpec("conv", next(widths), (1, 1), norm=True),
                     x, train, alpha)
      y = self._unit(f"{name}_conv2", UnitSpec("conv", next(widths), strides=strides,
                                               norm=True), y, train, alpha)
      return self._unit(f"{name}_conv3", UnitSpec("conv", features, (1, 1), norm=True,
                                                  act=False), y, train, alpha)
    y = self._unit(f"{name}_conv1", UnitSpec("conv", next(widths), strides=strides, norm=True),
                   x, train, alpha)
    return self._unit(f"{name}_conv2", UnitSpec("conv", features, norm=True, act=False),
                      y, train, alpha)


class Attention(nn.Module):
  """Multi-head self-attention with Flax's layout: `query`, `key`, `value` DenseGeneral
  kernels of [dim, heads, head_dim] and an `out` kernel of [heads, head_dim, dim]."""

  heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x):
    dense = lambda name: nn.DenseGeneral((self.heads, self.head_dim), name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(self.head_dim), -1)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(y)


class EncoderBlock(nn.Module):
  """Pre-norm (or post-norm) attention and MLP, each with a residual connection."""

  heads: int
  head_dim: int
  mlp_dim: int
  pre_norm: bool = True

  @nn.compact
  def __call__(self, x):
    attend = Attention(self.heads, self.head_dim, name="attn")
    mlp = lambda y: nn.Dense(x.shape[-1], name="mlp2")(nn.gelu(nn.Dense(self.mlp_dim,
                                                                        name="mlp1")(y)))
    norm1, norm2 = nn.LayerNorm(name="norm1"), nn.LayerNorm(name="norm2")
    if self.pre_norm:
      x = x + attend(norm1(x))
      return x + mlp(norm2(x))
    x = norm1(x + attend(x))
    return norm2(x + mlp(x))


class ViT(nn.Module):
  """A vision transformer (Dosovitskiy et al. 2021): the image cut into patches embedded by a
  convolution, a class token (or mean pooling) and learnt position embeddings, `depth`
  encoder blocks, a layer norm and a linear head. `heads` and `mlp_dims` per block are a
  compact export's (fewer heads, narrower MLPs); the class token, position embeddings,
  biases and norms are never pruned."""

  num_classes: int = 10
  patch_size: int = 4
  dim: int = 64
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 2.0
  pool: str = "token"  # "token" | "mean"
  pre_norm: bool = True
  heads: Sequence[int] | None = None  # per block (a compact export)
  mlp_dims: Sequence[int] | None = None
  blend_form: str = "layer"
  freeze_teacher: bool = True

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  def _blocks(self):
    heads = self.heads or [self.num_heads] * self.depth
    mlp = self.mlp_dims or [int(round(self.dim * self.mlp_ratio))] * self.depth
    return list(zip(heads, mlp))

  def channel_groups(self):
    raise NotImplementedError("vit prunes by heads or neurons, not filters")

  def unit_groups(self, structure: str):
    """The units `structure` removes whole, one group per block: [[(kernel path, its
    unit axis), ...], ...]. heads: each head's query, key and value columns and its rows of
    the output projection; neurons: each MLP hidden unit's column and row."""
    blocks = [f"block{i + 1}" for i in range(self.depth)]
    if structure == "heads":
      return [[(f"{b}/attn/{name}/kernel", 1) for name in ("query", "key", "value")]
              + [(f"{b}/attn/out/kernel", 0)] for b in blocks]
    if structure == "neurons":
      return [[(f"{b}/mlp1/kernel", 1), (f"{b}/mlp2/kernel", 0)] for b in blocks]
    raise ValueError(f"vit has no {structure!r} units; use heads or neurons")

  def compact_fields(self, kept, structure: str):
    heads, mlp = zip(*self._blocks())
    if structure == "heads":
      return {"heads": list(kept), "mlp_dims": list(mlp)}
    return {"heads": list(heads), "mlp_dims": list(kept)}

  @nn.compact
  def __call__(self, x, train: bool = False, alpha=None):
    del train, alpha  # no dropout, no batch statistics; layer form only
    p = self.patch_size
    x = nn.Conv(self.dim, (p, p), (p, p), padding="VALID", name="embed",
                conv_general_dilated=convolution.conv_general_dilated)(x)
    x = x.reshape((x.shape[0], -1, self.dim))
    if self.pool == "token":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
      x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
    x = x + self.param("pos", nn.initializers.normal(0.02), (1,) + x.shape[1:])
    for i, (heads, mlp_dim) in enumerate(self._blocks()):
      x = EncoderBlock(heads, self.head_dim, mlp_dim, self.pre_norm, name=f"block{i + 1}")(x)
    x = nn.LayerNorm(name="norm")(x)
    x = x[:, 0] if self.pool == "token" else jnp.mean(x, axis=1)
    return nn.Dense(self.num_classes, name="head")(x)


MODELS = {"mlp": MLP, "lenet5": LeNet5, "cnn": CNN, "vgg": VGG, "resnet": ResNet,
          "imagenet_resnet": ImageNetResNet, "vit": ViT}
UNIT_STRUCTURES = ("heads", "neurons")  # whole transformer units (models with unit_groups)


def make_model(model_config: Any, num_classes: int, blend_form: str = "layer",
               freeze_teacher: bool = True) -> nn.Module:
  """Builds the model `config.model` (a ConfigDict or mapping) names: a built-in one, or a
  user's Linen or NNX module by import path (see `usermodels`)."""
  cfg = dict(model_config)
  name = cfg.pop("name")
  if usermodels.is_user_model(name):
    if blend_form != "layer":
      raise ValueError(f"blend form {blend_form!r} needs a built-in model; {name} is a user's")
    return usermodels.make(name, num_classes, dict(cfg.get("kwargs") or {}))
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  fields = {f.name for f in dataclasses.fields(MODELS[name])} - {"parent", "name"}
  extra = dict(cfg.get("kwargs") or {})  # the model's other fields (e.g. cnn's channels)
  unknown = sorted(set(extra) - fields)
  if unknown:
    raise ValueError(f"model.kwargs has {unknown[0]!r}, which model {name} does not take; its "
                     f"fields are {sorted(fields - {'blend_form', 'freeze_teacher'})}")
  chosen = {**extra, **{key: value for key, value in cfg.items() if key in fields}}
  kwargs = {key: (tuple(value) if isinstance(value, list) else value)
            for key, value in chosen.items()}
  return MODELS[name](num_classes=num_classes, blend_form=blend_form,
                      freeze_teacher=freeze_teacher, **kwargs)
