"""`python tests/mock_main.py --config=... --workdir=...`: the real CLI on TFDS mock data.

For tests that need a separate process (kill and resume). MOCK_EXAMPLES sets
the number of mock examples per split.
"""

import os

import tensorflow_datasets as tfds
from absl import app

from alphaprune import main

if __name__ == "__main__":
  with tfds.testing.mock_data(num_examples=int(os.environ.get("MOCK_EXAMPLES", "200"))):
    app.run(main.main, flags_parser=main.parse_flags)
