"""data.stream: the same batches as on the device, the halves of two processes, worker
processes, and mid-epoch resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

from alphaprune import checkpoint, devices, train
from alphaprune.data import order as order_lib, source as source_lib, stream

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import fashion_mnist  # noqa: E402


def _smoke(**overrides):
  c = fashion_mnist.get_config("smoke")
  c.data.manual_dir = ""
  c.update_from_flattened_dict(overrides)
  return c


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_streamed_and_on_device_pipelines_train_alike(tmp_path):
  """Same rows in the same order (the on-device permutation), so the same run: every epoch's
  metrics agree and the exported models are equal to float rounding."""
  runs = {}
  handler = signal.getsignal(signal.SIGTERM)
  for pipeline in ("device", "stream"):
    config = _smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "data.pipeline": pipeline})
    with tfds.testing.mock_data(num_examples=160):
      runs[pipeline] = train.run(config, str(tmp_path / pipeline))
  assert signal.getsignal(signal.SIGTERM) is handler  # the run's own handler is gone again
  assert runs["stream"]["pruned_test_accuracy"] == runs["device"]["pruned_test_accuracy"]
  for a, b in zip(_metrics(tmp_path / "device"), _metrics(tmp_path / "stream"), strict=True):
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  a, _ = checkpoint.load_model(str(tmp_path / "device" / "export"))
  b, _ = checkpoint.load_model(str(tmp_path / "stream" / "export"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_batches_of_two_processes_are_the_halves_of_one():
  class Source:
    def __getitems__(self, rows):
      return [{"image": np.full((4, 4, 1), r, np.uint8), "label": r} for r in rows]

  rows = np.arange(100, 140)
  one = stream.TrainBatches(Source(), rows, 8, 0, 1, "none", (4, 4, 1))
  two = [stream.TrainBatches(Source(), rows, 8, 0, 1, "none", (4, 4, 1), p, 2) for p in (0, 1)]
  for k in (0, 3, 5, 7):  # steps of epochs 0 and 1
    halves = [t(k)["label"] for t in two]
    np.testing.assert_array_equal(one(k)["label"], np.concatenate(halves))
  epoch0 = np.concatenate([one(k)["label"] for k in range(5)])
  assert sorted(epoch0) == list(rows)  # every row once per epoch
  order = np.asarray(order_lib.epoch_order(0, 0, 40, 1))
  np.testing.assert_array_equal(epoch0, rows[order])  # the on-device order


def _cli(workdir, *extra):
  env = {**os.environ, "MOCK_EXAMPLES": "1000", "TF_CPP_MIN_LOG_LEVEL": "3",
         "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={os.path.join(REPO, 'configs', 'fashion_mnist.py')}:smoke",
       f"--workdir={workdir}", f"--config.data.data_dir={workdir}_tfds", "--config.data.prepare=True",
       "--config.data.manual_dir=", "--config.model.name=tests/user_models.py:LinenNet",
       "--config.data.pipeline=stream", "--config.checkpoint.every_steps=7", *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _mid_epoch_checkpoint(workdir, steps_per_epoch, early=False):
  """A mid-epoch checkpoint's step; `early`: only while the newest is in the first half of
  its epoch (a SIGTERM sent then lands before the epoch ends, even on a loaded machine)."""
  folder = workdir / "checkpoints" / "prune"
  if not folder.exists():
    return None
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
  if early:
    newest = max(steps, default=0)
    return newest if 0 < newest % steps_per_epoch <= steps_per_epoch // 2 else None
  return next((s for s in steps if s % steps_per_epoch), None)


def test_streamed_sigkill_and_sigterm_mid_epoch_resume_bit_identical(tmp_path):
  """A run killed (SIGKILL) after a mid-epoch checkpoint, and one stopped by SIGTERM, both
  resumed by the same command, end exactly as an uninterrupted run (batch norm, dropout)."""
  steps_per_epoch = 800 // 32  # 1000 mock examples, 20% held out, batch 32
  whole, killed, termed = tmp_path / "whole", tmp_path / "killed", tmp_path / "termed"
  ref, k_proc, t_proc = _cli(whole), _cli(killed), _cli(termed)
  deadline = time.time() + 240
  while time.time() < deadline and k_proc.poll() is None:
    if _mid_epoch_checkpoint(killed, steps_per_epoch):
      break
    time.sleep(0.01)
  k_proc.send_signal(signal.SIGKILL)
  k_proc.wait()
  while time.time() < deadline and t_proc.poll() is None:
    if _mid_epoch_checkpoint(termed, steps_per_epoch, early=True):
      break
    time.sleep(0.01)
  t_proc.send_signal(signal.SIGTERM)
  t_out, _ = t_proc.communicate(timeout=120)
  assert t_proc.returncode == 0 and "stopped by SIGTERM: saved" in t_out, t_out[-2000:]
  # It stopped at a step boundary inside an epoch, not at an epoch's end.
  stop_step = int(re.search(r"stopped by SIGTERM: saved prune at step (\d+)", t_out).group(1))
  assert stop_step % steps_per_epoch, t_out[-2000:]
  assert (termed / "checkpoints" / "prune" / str(stop_step)).exists()
  for workdir in (killed, termed):
    assert not (workdir / "summary.json").exists(), "the run finished before it was stopped"
    resumed = _cli(workdir)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "resumed prune at stage" in out, out[-2000:]
  ref_out, _ = ref.communicate(timeout=300)
  assert ref.returncode == 0, ref_out[-2000:]
  a, _ = checkpoint.load_model(str(whole / "export"))
  strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]
  for workdir in (killed, termed):
    b, _ = checkpoint.load_model(str(workdir / "export"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_array_equal(x, y)
    assert strip(_metrics(whole)) == strip(_metrics(workdir))


def test_grain_worker_processes_give_the_same_batches_as_threads(prepared):
  """On a prepared (real ArrayRecord) dataset: one worker process, and threads alone, read
  the same training and evaluation batches."""
  source = source_lib.open_source("fashion_mnist", data_dir=prepared, manual_dir=None,
                                  val_fraction=0.2)
  mesh = devices.make_mesh()
  pipelines = [stream.StreamPipeline(source, 16, 20, 0, mesh, workers=count) for count in (0, 1)]
  batches = []
  for pipeline in pipelines:
    iterator = pipeline.train_iterator(1, 2)
    train_batches = [next(iterator) for _ in range(2 * pipeline.steps_per_epoch)]
    iterator.close()
    batches.append((train_batches, list(pipeline.eval_batches("test"))))
  (train0, eval0), (train1, eval1) = batches
  for a, b in zip(train0 + eval0, train1 + eval1, strict=True):
    for key in a:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
  assert sum(float(np.sum(b["mask"])) for b in eval0) == source.num_examples("test")
