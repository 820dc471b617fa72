"""Every random stream of a run, derived from the seed alone, its salts named in one place.

A resumed run draws the same numbers as an uninterrupted one because nothing
here depends on wall-clock or process state: step randomness is
`fold_in(key(seed, STEP), step)`, data order `(seed, DATA_ORDER[phase], epoch)`.
"""

from __future__ import annotations

import jax

STEP = 0x5EED  # per-step randomness (augmentation, dropout), folded with the step
MASKS = 0x3A5C  # the random mask criterion
STUDENT = 0x57D  # the student's initialisation (and a fresh network's, for scratch/distill)
DROPOUT = 0xD50  # dropout, folded into the step's key
DATA_ORDER = {"pretrain": 1, "prune": 2}  # data-order salt of each phase, folded with the epoch


def key(seed: int, salt: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), salt)
