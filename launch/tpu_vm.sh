#!/usr/bin/env bash
# A TPU VM pod slice: the same command on every worker, with
# ALPHAPRUNE_DISTRIBUTED=1 so each process calls jax.distributed.initialize()
# (on TPU VMs JAX finds the coordinator itself). The repository must be at
# REPO_DIR on every worker (default ~/alphaprune), and WORKDIR on a filesystem
# all workers share. Each worker first installs it with the TPU build of jaxlib
# (`pip install -e '.[tpu]'`; a plain install would train on the host CPU);
# ALPHAPRUNE_SKIP_INSTALL=1 skips that.
#   bash launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
tpu="$1"; zone="$2"; config="$3"; workdir="$4"; shift 4
repo_dir="${REPO_DIR:-~/alphaprune}"
overrides=""
for arg in "$@"; do overrides+=" $(printf '%q' "$arg")"; done
install="python3 -m pip install -q -e '.[tpu]' && "
[ "${ALPHAPRUNE_SKIP_INSTALL:-0}" = 1 ] && install=""
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="cd $repo_dir && ${install}ALPHAPRUNE_DISTRIBUTED=1 python3 -m alphaprune.main --config=$(printf '%q' "$config") --workdir=$(printf '%q' "$workdir")$overrides"
