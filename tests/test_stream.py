"""The streamed pipeline: same batches as on device, host augmentation, mid-epoch resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

from alphaprune import checkpoint, data, devices, stream, train

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
    config = _smoke(**{"data.data_dir": str(tmp_path / "tfds"), "data.pipeline": pipeline})
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


def test_host_pad_crop_flip_matches_a_hand_built_crop():
  rng_images = np.random.default_rng(0).integers(0, 255, (6, 5, 7, 3)).astype(np.uint8)
  out = data.host_augment("pad_crop_flip", rng_images[2:5], 0, np.random.default_rng(9), 6, 2)
  draws = np.random.default_rng(9)
  offsets, flips = draws.integers(0, 9, (6, 2)), draws.random(6) < 0.5
  padded = np.pad(rng_images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(2, 5):
    dy, dx = offsets[i]
    crop = padded[i, dy:dy + 5, dx:dx + 7]
    np.testing.assert_array_equal(out[i - 2], crop[:, ::-1] if flips[i] else crop)


def test_host_augmentation_of_an_example_does_not_depend_on_the_process_reading_it():
  images = [np.random.default_rng(i).integers(0, 255, (20 + i, 30 - i, 3)).astype(np.uint8)
            for i in range(4)]
  for kind in ("pad_crop_flip", "inception_crop_flip"):
    batch = images if kind == "inception_crop_flip" else [i[:16, :16] for i in images]
    whole = data.host_augment(kind, batch, 16, np.random.default_rng(5), 4, 0)
    halves = [data.host_augment(kind, batch[lo:lo + 2], 16, np.random.default_rng(5), 4, lo)
              for lo in (0, 2)]
    np.testing.assert_array_equal(whole, np.concatenate(halves))
    assert whole.shape == (4, 16, 16, 3)


def test_inception_crop_and_evaluation_crop_sizes():
  image = np.random.default_rng(0).integers(0, 255, (40, 60, 3)).astype(np.uint8)
  u = np.random.default_rng(1).random((10, 4))
  assert data.inception_crop(image, 24, u).shape == (24, 24, 3)
  centre = data.resize_centre_crop(image, 24)
  assert centre.shape == (24, 24, 3)
  # A square image already at size / 0.875 is only centre-cropped.
  square = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
  np.testing.assert_array_equal(data.resize_centre_crop(square, 28), square[2:30, 2:30])


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
  order = np.asarray(data.epoch_order(0, 0, 40, 1))
  np.testing.assert_array_equal(epoch0, rows[order])  # the on-device order


def _cli(workdir, *extra):
  env = {**os.environ, "MOCK_EXAMPLES": "1000", "TF_CPP_MIN_LOG_LEVEL": "3",
         "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={os.path.join(REPO, 'configs', 'fashion_mnist.py')}:smoke",
       f"--workdir={workdir}", f"--config.data.data_dir={workdir}_tfds",
       "--config.data.manual_dir=", "--config.model.name=tests/user_models.py:LinenNet",
       "--config.data.pipeline=stream", "--config.checkpoint.every_steps=7", *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _mid_epoch_checkpoint(workdir, steps_per_epoch):
  folder = workdir / "checkpoints" / "prune"
  if not folder.exists():
    return None
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
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
    if (termed / "checkpoints" / "prune").exists():
      break
    time.sleep(0.01)
  t_proc.send_signal(signal.SIGTERM)
  t_out, _ = t_proc.communicate(timeout=120)
  assert t_proc.returncode == 0 and "stopped by SIGTERM: saved" in t_out, t_out[-2000:]
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
  source = data.open_source("fashion_mnist", data_dir=prepared, manual_dir=None,
                            val_fraction=0.2)
  mesh = devices.make_mesh()
  feeds = [stream.Feed(source, 16, 20, 0, mesh, workers=w) for w in (0, 1)]
  batches = []
  for feed in feeds:
    iterator = feed.train_iterator(stream=1, epochs=2)
    train_batches = [next(iterator) for _ in range(2 * feed.steps_per_epoch)]
    iterator.close()
    batches.append((train_batches, list(feed.eval_batches("test"))))
  (train0, eval0), (train1, eval1) = batches
  for a, b in zip(train0 + eval0, train1 + eval1, strict=True):
    for key in a:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
  assert sum(float(np.sum(b["mask"])) for b in eval0) == source.num_examples("test")
