"""Convolution and 2×2 max-pooling that train fast on a CPU; XLA's own elsewhere.

XLA:CPU runs `lax.conv_general_dilated` and, above all, its gradients slowly:
a LeNet-5 train step (batch 128) took 91 ms with XLA's convolution and
`nn.max_pool` against about 12 ms with the formulations here, a VGG-11 (width
0.25, 32×32×3) step 2.8 s against 0.12 s (`python -m alphaprune.bench`, and the
closing notes of issue #15). Each layer takes the cheaper of two formulations
(`_banded_is_cheaper`, a cost model of floats moved against multiply-adds):

* **banded** (narrow images, e.g. LeNet-5's 28×28 and 14×14 layers): each output
  row is one matmul of the kh input rows it sees, (N·Ho, kh·Wp·C), with a banded
  matrix built from the kernel, (kh·Wp·C, Wo·O). It moves kh slices instead of
  kh·kw and does Wp/kw times the multiply-adds; autodiff gives both gradients
  (the kernel's summed back along the band, the input's by kh padded adds).
* **im2col** (wide images with many channels, e.g. VGG's), with a `custom_vjp`:
  * forward, one input channel: the k·k shifted slices stacked tap-major,
    (k·k, N·Ho·Wo), times the kernel, kept for the kernel gradient. (A fused
    sum of scaled slices is 3× faster alone, but XLA:CPU runs it ~10× slower
    inside the epoch's `lax.scan` once fused with a reduction);
  * forward, several channels: the k·k shifted slices side by side (taps
    outer, channels inner) times the kernel reshaped to (k·k·C, O);
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
import numpy as np
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

  On a CPU by reshape and max, with a gradient of our own: each window's gradient goes to
  its first maximum (row-major), as with XLA's select-and-scatter, which is slow there;
  autodiff of the reshape-max would share it between tied maxima, at the cost of counting
  them (ReLU's zeros tie in every dead window)."""
  if not _ours():
    return nn.max_pool(x_nhwc, (2, 2), strides=(2, 2), padding="SAME")
  n, h, w, c = x_nhwc.shape
  if h % 2 or w % 2:
    x_nhwc = jnp.pad(x_nhwc, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                     constant_values=-jnp.inf)
  return _pool(x_nhwc)


def _windows(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _pool(x):
  return _windows(x).max(axis=(2, 4))


def _pool_fwd(x):
  y = _pool(x)
  return y, (x, y)


def _pool_bwd(residuals, g):
  x, y = residuals
  windows = _windows(x)
  position = (2 * lax.broadcasted_iota(jnp.int32, windows.shape, 2)
              + lax.broadcasted_iota(jnp.int32, windows.shape, 4))  # row-major in the window
  at_max = jnp.where(windows == y[:, :, None, :, None, :], position, 4)
  first = position == at_max.min(axis=(2, 4), keepdims=True)
  return (jnp.where(first, g[:, :, None, :, None, :], 0).reshape(x.shape),)


_pool.defvjp(_pool_fwd, _pool_bwd)


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


def conv2d(x, kernel, strides, pads):
  """NHWC × HWIO convolution with explicit `pads` ((top, bottom), (left, right))."""
  if _banded_is_cheaper(x.shape, kernel.shape, strides, pads):
    return _banded(x, kernel, strides, pads)
  return _im2col(x, kernel, strides, pads)


# A float written and read back costs about as much as this many multiply-adds in a
# matmul on the CPUs measured (LeNet-5's step: 95 µs to copy a 100,000-float tap slice,
# matmuls at ~190 GFLOP/s).
_MACS_PER_FLOAT = 200


def _banded_is_cheaper(x_shape, k_shape, strides, pads) -> bool:
  """Whether the banded formulation beats im2col for this layer: it moves kh·Wp·C floats
  per output row where im2col moves Wo·kh·kw·C, at the price of Wp/(kw·sw) times the
  multiply-adds (its band is mostly zeros). It wins on narrow images (LeNet-5's 28×28 and
  14×14 inputs), loses on wide ones with many channels (VGG's)."""
  kh, kw, c, o = k_shape
  wp = x_shape[2] + sum(pads[1])
  wo = _out_hw(x_shape, k_shape, strides, pads)[1]
  per_row = lambda floats, macs: _MACS_PER_FLOAT * floats + 3 * macs  # forward + 2 grads
  return (per_row(kh * wp * c, kh * wp * c * wo * o)
          < per_row(wo * kh * kw * c, wo * kh * kw * c * o))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _banded(x, kernel, strides, pads):
  """Each output row as one matmul of the kh input rows it sees, (N·Ho, kh·Wp·C), with a
  banded matrix built from the kernel, (kh·Wp·C, Wo·O): entry ((i, p, c), (x, o)) is
  kernel[i, p − x·sw, c, o] inside the band and 0 outside. Autodiff gives the gradients:
  the kernel's from the same rows (summed back along the band), the input's by kh adds."""
  kh, kw, c, o = kernel.shape
  n, wp = x.shape[0], x.shape[2] + sum(pads[1])
  (sh, sw), (ho, wo) = strides, _out_hw(x.shape, kernel.shape, strides, pads)
  band = (np.arange(wp)[:, None, None]
          == sw * np.arange(wo)[None, None, :] + np.arange(kw)[None, :, None])  # (Wp, kw, Wo)
  matrix = jnp.einsum("pjx,ijco->ipcxo", band.astype(x.dtype), kernel)
  rows = jnp.stack(_taps(x, (kh, 1), (sh, 1), pads, (ho, wp)), axis=2)  # whole padded rows
  y = jnp.dot(rows.reshape(n * ho, kh * wp * c), matrix.reshape(kh * wp * c, wo * o))
  return y.reshape(n, ho, wo, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _im2col(x, kernel, strides, pads):
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


_im2col.defvjp(_conv2d_fwd, _conv2d_bwd)
