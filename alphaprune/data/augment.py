"""Image transforms: normalisation and CIFAR's pad-crop-flip on the device (inside the
jitted step), and the host's augmentations for the streamed pipeline.

On the host every random number is drawn for the whole global batch and sliced, so an
example is augmented alike whichever process reads it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# none; pad_crop_flip (CIFAR: 4-pixel pad, random crop, flip); inception_crop_flip
# (ImageNet: random resized crop and flip for training, resize and centre crop to evaluate).
AUGMENTATIONS = ("none", "pad_crop_flip", "inception_crop_flip")


# ---------------------------------------------------------------- on device

def normalise(images_u8, mean, std):
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def pad_crop_flip(key, images_bhwc):
  """Random crop after 4-pixel zero padding, and a random horizontal flip, per image."""
  batch, height, width, _ = images_bhwc.shape
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(images_bhwc, ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = jax.random.randint(k_crop, (batch, 2), 0, 9)
  flips = jax.random.bernoulli(k_flip, 0.5, (batch,))

  def one(img, off, flip):
    crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (height, width, img.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


# ---------------------------------------------------------------- on the host (streamed)

def resize_centre_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """Evaluation view of an image of any size: the shorter side resized to size / 0.875,
  then the central size × size square."""
  height, width = image.shape[:2]
  scale = size / crop_fraction / min(height, width)
  new_height = max(size, int(round(height * scale)))
  new_width = max(size, int(round(width * scale)))
  resized = _resize(image, new_height, new_width)
  top, left = (new_height - size) // 2, (new_width - size) // 2
  return resized[top:top + size, left:left + size]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image

  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR), np.uint8)
  return out[..., None] if channels == 1 else out


def inception_crop(image: np.ndarray, size: int, uniforms: np.ndarray) -> np.ndarray:
  """Random resized crop (area 8–100% of the image, aspect ratio 3/4–4/3, the Inception
  recipe) driven by 10 tries of 4 uniform numbers `uniforms` [10, 4] (area, aspect ratio,
  top, left); falls back to the centre square; resized to size × size."""
  height, width = image.shape[:2]
  area = height * width
  for scale_u, ratio_u, top_u, left_u in uniforms:
    target = area * (0.08 + 0.92 * scale_u)
    ratio = np.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * ratio_u)
    crop_w, crop_h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top, left = int(top_u * (height - crop_h + 1)), int(left_u * (width - crop_w + 1))
      return _resize(image[top:top + crop_h, left:left + crop_w], size, size)
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return _resize(image[top:top + side, left:left + side], size, size)


def host_augment(kind: str, images, size: int, rng: np.random.Generator, global_batch: int,
                 lo: int) -> np.ndarray:
  """Training augmentation on the host of examples lo:lo+len(images) of a global batch.

  Every random number is drawn from `rng` for the whole global batch and sliced, so an
  example is augmented the same way whichever process reads it.
  """
  hi = lo + len(images)
  if kind == "pad_crop_flip":
    offsets = rng.integers(0, 9, (global_batch, 2))[lo:hi]
    flips = (rng.random(global_batch) < 0.5)[lo:hi]
    images = np.asarray(images)
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.stack([padded[i, dy:dy + height, dx:dx + width]
                    for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips, :, ::-1]
    return out
  if kind == "inception_crop_flip":
    uniforms = rng.random((global_batch, 10, 4))[lo:hi]
    flips = (rng.random(global_batch) < 0.5)[lo:hi]
    out = np.stack([inception_crop(image, size, draws) for image, draws in zip(images, uniforms)])
    out[flips] = out[flips, :, ::-1]
    return out
  if kind == "none":
    return np.asarray(images)
  raise ValueError(f"unknown augmentation {kind!r}; use one of {list(AUGMENTATIONS)}")
