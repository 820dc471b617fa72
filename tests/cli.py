"""The real command-line entry, run in this process (for exit codes and stderr)."""

import sys

from absl import flags

from alphaprune import main

main.EXIT = sys.exit  # in this process: SystemExit, not os._exit


def run_cli(argv) -> int:
  """`python -m alphaprune.main ARGV[1:]` in this process; returns the exit code."""
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # override flags are defined per parse
  sys.argv = list(argv)  # ml_collections finds --config.KEY overrides in sys.argv
  try:
    main.main(main.parse_flags(argv))
  except SystemExit as e:
    return e.code
  return 0
