"""Convolution and 2×2 max-pooling that train fast on a CPU; XLA's own elsewhere.

XLA:CPU runs `lax.conv_general_dilated` and, above all, its gradients slowly:
a LeNet-5 train step (batch 128) took 91 ms with XLA's convolution and
`nn.max_pool` against 17 ms with the formulation here, a VGG-11 (width 0.25,
32×32×3) step 2.8 s against 0.12 s (`python -m alphaprune.bench`, and the
closing note of issue #15 for the probe). Each part is the fastest of the
formulations measured on this machine:

* forward, one input channel: the k·k shifted slices stacked tap-major,
  (k·k, N·Ho·Wo), times the kernel: a matmul, kept for the kernel gradient.
  (A fused sum of scaled slices is 3× faster alone, but XLA:CPU runs such
  elementwise fusions ~10× slower inside the `lax.scan` that runs an epoch;
  matmuls are not affected);
* forward, several channels: im2col (the k·k shifted slices side by side,
  taps outer and channels inner) times the kernel reshaped to (k·k·C, O), one matmul;
* kernel gradient: the same patches, transposed, times the output gradient
  (rebuilt in the backward pass when there are several channels);
* input gradient: the output gradient times the transposed kernel gives each
  patch's gradient, scattered back by k·k padded adds (col2im), strides
  included as interior padding.

The input gradient of a network's first convolution is never used, and XLA
drops it. Dilated and grouped convolutions, and every backend but the CPU,
take `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def _ours() -> bool:
  return jax.default_backend() == "cpu"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (what `nn.Conv(conv_general_dilated=...)` takes)."""
  plain = all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
  nhwc = lhs.ndim == 4 and (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if not (_ours() and plain and nhwc and feature_group_count == 1
          and preferred_element_type is None):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return conv2d(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


@jax.jit
def max_pool_2x2(x_nhwc):
  """2×2 max-pooling, stride 2, SAME padding (odd sizes padded with −∞ at the end).

  On a CPU by reshape and max: XLA's select-and-scatter gradient is slow there.
  Where a window holds equal maxima the gradient is shared between them rather
  than given to the first; the forward values are identical."""
  if not _ours():
    return nn.max_pool(x_nhwc, (2, 2), strides=(2, 2), padding="SAME")
  n, h, w, c = x_nhwc.shape
  if h % 2 or w % 2:
    x_nhwc = jnp.pad(x_nhwc, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                     constant_values=-jnp.inf)
  n, h, w, c = x_nhwc.shape
  return x_nhwc.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# ------------------------------------------------------------------ the convolution


def _out_hw(x_shape, k_shape, strides, pads):
  return tuple((x_shape[1 + d] + sum(pads[d]) - k_shape[d]) // strides[d] + 1 for d in range(2))


def _taps(x, k_hw, strides, pads, out_hw):
  """The k·k slices of the padded input that each kernel tap sees, tap by tap (row-major)."""
  x_padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  n, _, _, c = x_padded.shape
  (sh, sw), (ho, wo) = strides, out_hw
  return [lax.slice(x_padded, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(k_hw[0]) for j in range(k_hw[1])]


def _patches(x, k_shape, strides, pads, out_hw):
  """im2col: (N, Ho, Wo, kh·kw·C), taps outer and channels inner, like `k.reshape(-1, O)`.
  (Stacked on a new axis and reshaped: the same array as a concatenation on the channel
  axis, and quicker for XLA to compile.)"""
  taps = jnp.stack(_taps(x, k_shape[:2], strides, pads, out_hw), axis=3)
  return taps.reshape(taps.shape[:3] + (-1,))


def _taps_first(x, k_hw, strides, pads, out_hw):
  """One input channel's patches as (kh·kw, N·Ho·Wo): each tap's slice contiguous."""
  taps = jnp.stack([t[..., 0] for t in _taps(x, k_hw, strides, pads, out_hw)])
  return taps.reshape(taps.shape[0], -1)


# Each part is jitted so that eager calls (model.init, a notebook's apply) run
# as one compiled program each rather than dozens of small ones; under an outer
# jit they are inlined.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides, pads):
  """NHWC × HWIO convolution with explicit `pads` ((top, bottom), (left, right))."""
  return _forward(x, kernel, strides, pads)[0]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _forward(x, kernel, strides, pads):
  """(output, the patches when there is one input channel, else None)."""
  kh, kw, c, o = kernel.shape
  out_hw = _out_hw(x.shape, kernel.shape, strides, pads)
  if c == 1:
    taps = _taps_first(x, (kh, kw), strides, pads, out_hw)
    y = jnp.dot(taps.T, kernel.reshape(kh * kw, o))
    return y.reshape((x.shape[0],) + out_hw + (o,)), taps
  return jnp.dot(_patches(x, kernel.shape, strides, pads, out_hw), kernel.reshape(-1, o)), None


def _conv2d_fwd(x, kernel, strides, pads):
  # With several channels the patches are rebuilt in the backward pass (k·k times
  # the input is too much to keep for every layer); a single channel's are kept.
  y, taps = _forward(x, kernel, strides, pads)
  return y, (x, kernel, taps)


def _conv2d_bwd(strides, pads, residuals, g):
  return _backward(*residuals, g, strides, pads)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _backward(x, kernel, taps, g, strides, pads):
  kh, kw, c, o = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  if taps is not None:
    d_kernel = jnp.dot(taps, g.reshape(-1, o)).reshape(kernel.shape)
  else:
    patches = _patches(x, kernel.shape, strides, pads, (ho, wo))
    d_kernel = jnp.dot(patches.reshape(-1, kh * kw * c).T,
                       g.reshape(-1, o)).reshape(kernel.shape)
  d_patches = jnp.dot(g, kernel.reshape(-1, o).T)  # (N, Ho, Wo, kh·kw·C)
  hp, wp = h + sum(pads[0]), w + sum(pads[1])
  (sh, sw), zero = strides, jnp.zeros((), g.dtype)
  d_padded = None
  for i in range(kh):
    for j in range(kw):
      tap = d_patches[..., (i * kw + j) * c:(i * kw + j + 1) * c]
      placed = lax.pad(tap, zero, ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1),
                                   (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
      d_padded = placed if d_padded is None else d_padded + placed
  d_x = d_padded[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w, :]
  return d_x, d_kernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
