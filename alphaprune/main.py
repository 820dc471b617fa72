"""Command line: `python -m alphaprune.main --config=configs/NAME.py[:VARIANT] --workdir=DIR`.

Only parses flags and calls `train.run(config, workdir)`. Exit codes: 0 done;
2 bad config or input (one line on stderr, nothing written); 1 anything else.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:VARIANT]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs, export and report go.")


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv):
  """Flag errors (unknown keys, bad values, missing config) are bad input: exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (ValueError, KeyError, AttributeError, TypeError, FileNotFoundError) as e:
    _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}")


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty; progress lines are ours
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; use --config.KEY=VALUE")
  if _WORKDIR.value is None:
    _fail("--workdir is required (where the run's files go)")
  try:
    config = _CONFIG.value
  except Exception as e:  # the config file itself is broken
    _fail(f"cannot load --config: {e}")
  if config is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py:quick")

  from alphaprune import train
  from alphaprune.config import ConfigError
  from alphaprune.data import DataError
  try:
    train.run(config, _WORKDIR.value)
  except (ConfigError, DataError) as e:
    _fail(str(e))
  except train.NonFiniteLoss as e:
    _fail(str(e), code=1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
