#!/usr/bin/env bash
# The one short check to run when an accelerator is lent (a GPU or a TPU host): a real run,
# the streamed input's rate, the blend and bfloat16 step costs at LeNet-5 and ResNet-50
# shapes, and the compact export's speed. Writes results/device_check/NAME.json after each
# section (NAME: the first device's kind), stops starting sections after BUDGET_S seconds.
#
#   DATA_DIR=/path/to/tfds bash launch/device_check.sh     # prepared fashion_mnist there
#   DRY_RUN=1 bash launch/device_check.sh                  # toy sizes, any machine
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
name=$("$python" -c "import jax; print(jax.devices()[0].device_kind)")
name=${name// /_}
out=results/device_check/${name}${DRY_RUN:+_dry}.json
args=(--out="$out" --budget-s="${BUDGET_S:-420}")
[ -n "${DATA_DIR:-}" ] && args+=(--data-dir="$DATA_DIR")
[ -n "${DRY_RUN:-}" ] && args+=(--dry-run)
"$python" -m alphaprune.bench.device_check "${args[@]}"
echo "wrote $out"
