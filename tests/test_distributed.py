"""Data parallelism: 8 CPU devices, and two processes joined by gloo, match one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from alphaprune import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [f"--config={REPO}/configs/fashion_mnist.py:smoke", "--config.data.manual_dir=",
        "--config.data.eval_batch_size=40",
        "--config.data.batch_size=32"]


def _launch(workdir, env_extra, tfds_dir, *extra):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", **env_extra}
  return subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "mock_main.py"), *ARGS,
                           f"--workdir={workdir}", f"--config.data.data_dir={tfds_dir}", "--config.data.prepare=True", *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  return out


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _close(a, b, workdir_a, workdir_b):
  for x, y in zip(_metrics(workdir_a), _metrics(workdir_b)):
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
      np.testing.assert_allclose(x[key], y[key], rtol=2e-4, atol=2e-4, err_msg=key)
  va, _ = checkpoint.load_model(os.path.join(workdir_a, "export"))
  vb, _ = checkpoint.load_model(os.path.join(workdir_b, "export"))
  for x, y in zip(jax.tree.leaves(va), jax.tree.leaves(vb)):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)


def test_eight_devices_match_one(tmp_path):
  one = _launch(tmp_path / "one", {}, tmp_path / "tfds1")
  eight = _launch(tmp_path / "eight", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                  tmp_path / "tfds8")
  _finish(one), _finish(eight)
  _close(None, None, tmp_path / "one", tmp_path / "eight")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_with_gloo_match_one_on_both_pipelines(tmp_path):
  """One process (on device) against two on device and two streamed (each streamed process
  reading only its half of every batch); one process alike on both pipelines is
  test_stream's."""
  single = _launch(tmp_path / "single", {}, tmp_path / "tfds_single")
  _finish(single)
  for pipeline in ("device", "stream"):
    port = _free_port()
    procs = [_launch(tmp_path / pipeline, {"ALPHAPRUNE_DISTRIBUTED": "1",
                                           "ALPHAPRUNE_COORDINATOR": f"127.0.0.1:{port}",
                                           "ALPHAPRUNE_NUM_PROCESSES": "2",
                                           "ALPHAPRUNE_PROCESS_ID": str(i)},
                     tmp_path / f"tfds_{pipeline}{i}", f"--config.data.pipeline={pipeline}")
             for i in range(2)]
    outs = [_finish(p) for p in procs]
    assert "done:" in outs[0] and "done:" not in outs[1]  # process 0 alone reports
    assert f"{pipeline} pipeline" in outs[0]
    _close(None, None, tmp_path / "single", tmp_path / pipeline)
