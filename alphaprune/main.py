"""Command line: `python -m alphaprune.main --config=configs/NAME.py[:VARIANT] --workdir=DIR
[--config.KEY=VALUE ...]`.

Only parses flags and calls `train.run(config, workdir)`. Exit codes: 0 done, or stopped
by SIGTERM after saving (the same command resumes); 2 bad config or input (one line on
stderr, nothing written); 1 anything else.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

_CONFIG = flags.DEFINE_string("config", None, "Config file (configs/NAME.py[:VARIANT]); "
                              "--config.KEY=VALUE overrides one of its keys.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs, export and report go.")


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv):
  """Flag errors are bad input: exit 2. Returns [program, --config.KEY=VALUE overrides...]:
  the overrides are the config loader's to parse (`config.load`)."""
  overrides = [arg for arg in argv[1:] if arg.startswith("--config.")]
  rest = [arg for arg in argv if not arg.startswith("--config.")]
  try:
    unparsed = flags.FLAGS(rest)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _fail(" ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0])
  if len(unparsed) > 1:
    _fail(f"unexpected arguments {unparsed[1:]}; use --config.KEY=VALUE")
  return [argv[0], *overrides]


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and TFDS are chatty; progress lines are ours
  if _WORKDIR.value is None:
    _fail("--workdir is required (where the run's files go)")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py:quick")
  from alphaprune import config as config_lib
  from alphaprune import devices, train
  from alphaprune.data import DataError
  try:
    config = config_lib.load(_CONFIG.value, argv[1:])
  except config_lib.ConfigError as e:
    _fail(str(e))
  devices.maybe_initialize_distributed()
  try:
    train.run(config, _WORKDIR.value)
  except (config_lib.ConfigError, DataError) as e:
    _fail(str(e))
  except train.NonFiniteLoss as e:
    _fail(str(e), code=1)
  except train.Preempted as e:
    print(e, flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
