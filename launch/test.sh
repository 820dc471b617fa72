#!/usr/bin/env bash
# The test suite on a fresh machine: install with the test extras, then pytest.
#   bash launch/test.sh [PYTEST ARGS ...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
exec .venv/bin/python -m pytest -n 2 -q "$@"
