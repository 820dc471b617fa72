#!/usr/bin/env bash
# The main job on a fresh machine: install, fetch real Fashion-MNIST (Debian
# package, offline), and run the whole pipeline with the `quick` config.
#   bash launch/quickstart.sh [WORKDIR] [--config.KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
workdir="${1:-runs/fashion_mnist_quick}"
shift || true
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or pass --config.data.manual_dir=DIR" >&2
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[prepare]'
exec .venv/bin/python -m alphaprune.main --config=configs/fashion_mnist.py:quick \
  --workdir="$workdir" "$@"
