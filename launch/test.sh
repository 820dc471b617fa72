#!/usr/bin/env bash
# The test suite on a fresh machine: install with the test extras (and, as root, Debian's
# offline Fashion-MNIST, which the smoke-variant tests run on), then pytest.
#   bash launch/test.sh [PYTEST ARGS ...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
    && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -n 2 -q "$@"
