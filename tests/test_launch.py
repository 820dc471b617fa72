"""Launch scripts: valid bash, and each calls alphaprune with the arguments it documents."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/quickstart.sh", "launch/test.sh", "launch/local.sh", "launch/tpu_vm.sh",
           "launch/slurm.sbatch", "launch/device_check.sh", ".ci/run"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  subprocess.run(["bash", "-n", os.path.join(REPO, script)], check=True)


def _stub(bin_dir, name, log):
  path = bin_dir / name
  path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$0" "$@" > {log}\n'
                  f'env | grep ^ALPHAPRUNE_ >> {log} || true\n')
  path.chmod(0o755)
  return str(path)


def _run(cmd, tmp_path, **env):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PATH": f"{tmp_path}/bin:{os.environ['PATH']}", **env})
  assert proc.returncode == 0, proc.stderr
  return (tmp_path / "log").read_text().splitlines()


def test_local_runs_main_with_config_workdir_and_overrides(tmp_path):
  (tmp_path / "bin").mkdir()
  python = _stub(tmp_path / "bin", "python", tmp_path / "log")
  args = _run(["bash", "launch/local.sh", "configs/reference.py:smoke", "runs/x",
               "--config.seed=3"], tmp_path, PYTHON=python)
  assert args[1:] == ["-m", "alphaprune.main", "--config=configs/reference.py:smoke",
                      "--workdir=runs/x", "--config.seed=3"]


def test_tpu_vm_runs_on_every_worker_with_distributed_on(tmp_path):
  (tmp_path / "bin").mkdir()
  _stub(tmp_path / "bin", "gcloud", tmp_path / "log")
  args = _run(["bash", "launch/tpu_vm.sh", "my-tpu", "us-central2-b", "configs/reference.py",
               "/mnt/shared/run", "--config.seed=2"], tmp_path)
  assert args[1:7] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-central2-b"]
  assert "--worker=all" in args
  command = [a for a in args if a.startswith("--command=")][0]
  # Every worker installs the TPU jaxlib first (a plain install trains on the host CPU).
  assert "python3 -m pip install -q -e '.[tpu]' && ALPHAPRUNE_DISTRIBUTED=1 python3 -m " \
      "alphaprune.main" in command
  assert "--config=configs/reference.py --workdir=/mnt/shared/run --config.seed=2" in command


def test_slurm_uses_srun_with_distributed_on(tmp_path):
  (tmp_path / "bin").mkdir()
  _stub(tmp_path / "bin", "srun", tmp_path / "log")
  args = _run(["bash", "launch/slurm.sbatch", "configs/reference.py", "/shared/run",
               "--config.train.learning_rate=0.01"], tmp_path, PYTHON="python3")
  assert args[1:4] == ["--kill-on-bad-exit=1", "env", "ALPHAPRUNE_DISTRIBUTED=1"]
  assert args[4:] == ["python3", "-m", "alphaprune.main", "--config=configs/reference.py",
                      "--workdir=/shared/run", "--config.train.learning_rate=0.01"]


def test_local_without_arguments_is_a_usage_error():
  proc = subprocess.run(["bash", "launch/local.sh"], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2 and "usage" in proc.stderr


def test_device_check_names_its_file_after_the_device_and_passes_data_and_budget(tmp_path):
  (tmp_path / "bin").mkdir()
  python = tmp_path / "bin" / "python"
  python.write_text('#!/usr/bin/env bash\nif [ "$1" = -c ]; then echo "NVIDIA H100 80GB"; '
                    f'exit; fi\nprintf "%s\\n" "$@" > {tmp_path / "log"}\n')
  python.chmod(0o755)
  args = _run(["bash", "launch/device_check.sh"], tmp_path, PYTHON=str(python),
              DATA_DIR="/data/tfds", BUDGET_S="300")
  assert args == ["-m", "alphaprune.bench.device_check",
                  "--out=results/device_check/NVIDIA_H100_80GB.json", "--budget-s=300",
                  "--data-dir=/data/tfds"]
