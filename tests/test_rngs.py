"""rngs: every stream a pure function of (seed, salt), the salts apart."""

import jax
import numpy as np

from alphaprune import rngs


def _bits(key):
  return np.asarray(jax.random.key_data(key)).tolist()


def test_keys_depend_on_seed_and_salt_alone():
  assert _bits(rngs.key(3, rngs.STEP)) == _bits(rngs.key(3, rngs.STEP))
  salts = [rngs.STEP, rngs.MASKS, rngs.STUDENT, rngs.DROPOUT]
  assert len({tuple(_bits(rngs.key(0, salt))) for salt in salts}) == len(salts)
  assert _bits(rngs.key(0, rngs.STEP)) != _bits(rngs.key(1, rngs.STEP))
  assert len(set(rngs.DATA_ORDER.values())) == len(rngs.DATA_ORDER)  # phases apart
