"""Command line: `python -m alphaprune.main --config=configs/NAME.py[:VARIANT] --workdir=DIR`.

Only parses flags and calls `train.run(config, workdir)`. Exit codes: 0 done, or
stopped by SIGTERM after saving (the same command resumes); 2 bad config or input
(one line on stderr, nothing written); 1 anything else.
"""

from __future__ import annotations

import os
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
  for arg in argv[1:]:
    if arg.startswith("--config=") and not os.path.exists(arg.split("=", 1)[1].split(":")[0]):
      _fail(f"config file {arg.split('=', 1)[1].split(':')[0]} does not exist; "
            f"the configs are in configs/ (e.g. configs/fashion_mnist.py:quick)")
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _fail(" ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0])
  except (KeyError, AttributeError) as e:  # ml_collections: an override names no key
    key = str(e).strip("'\"\\ ")
    _fail(f"no config key {key!r} in a --config.KEY=VALUE override; the keys and their "
          "defaults are in alphaprune/config.py")
  except (ValueError, TypeError, OSError) as e:
    _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}")


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty; progress lines are ours
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; use --config.KEY=VALUE")
  if _WORKDIR.value is None:
    _fail("--workdir is required (where the run's files go)")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py:quick")
  try:
    config = _CONFIG.value
    config.keys()  # the flag loads lazily: a missing or broken file fails here
  except Exception as e:
    _fail(f"cannot load --config={flags.FLAGS['config'].config_filename}: "
          f"{str(e).splitlines()[0]}")

  from alphaprune import devices, train
  from alphaprune.config import ConfigError
  from alphaprune.data import DataError
  devices.maybe_initialize_distributed()
  try:
    train.run(config, _WORKDIR.value)
  except (ConfigError, DataError) as e:
    _fail(str(e))
  except train.NonFiniteLoss as e:
    _fail(str(e), code=1)
  except train.Preempted as e:
    print(e, flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
