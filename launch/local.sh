#!/usr/bin/env bash
# One machine, any accelerator (CPU, one or several GPUs, a single TPU VM host):
# JAX uses every local device; batches are split over them on a ("data",) mesh.
#   bash launch/local.sh CONFIG WORKDIR [--config.KEY=VALUE ...]
#   bash launch/local.sh configs/reference.py runs/ref --config.seed=1
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash launch/local.sh CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
config="$1"; workdir="$2"; shift 2
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
exec "$python" -m alphaprune.main --config="$config" --workdir="$workdir" "$@"
