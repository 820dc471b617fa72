"""devices: one 1-D mesh; replicated state, batches split along "data"; the persistent
compilation cache."""

import os
import subprocess
import sys

import jax
import numpy as np

from alphaprune import devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_placement_on_the_data_mesh():
  mesh = devices.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
  tree = devices.put_replicated({"w": np.arange(6.0)}, mesh)
  assert tree["w"].sharding.is_fully_replicated
  np.testing.assert_array_equal(tree["w"], np.arange(6.0))
  batch = devices.put_batch({"x": np.arange(8 * jax.device_count())}, mesh)
  assert batch["x"].sharding.spec == devices.batch_sharded(mesh).spec
  assert devices.host_device().platform == "cpu"
  assert devices.memory_bytes() > 2**20
  assert devices.is_primary()


def _synthetic_run(workdir, cache):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  return subprocess.run(
      [sys.executable, "-m", "alphaprune.main", f"--config={REPO}/configs/fashion_mnist.py:smoke",
       f"--workdir={workdir}", "--config.data.name=synthetic", "--config.data.manual_dir=",
       "--config.teacher.epochs=1", "--config.train.max_epochs_per_stage=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**env, "ALPHAPRUNE_COMPILE_CACHE": str(cache),
           # every program is written, however fast it compiled: the check below cannot
           # depend on how loaded the machine is
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "XDG_CACHE_HOME": str(workdir) + "_xdg"})  # where the default folder would go


def test_a_second_identical_run_compiles_nothing_new_into_the_persistent_cache(tmp_path):
  cache = tmp_path / "cache"
  first = _synthetic_run(tmp_path / "a", cache)
  assert first.returncode == 0, first.stderr[-2000:]
  entries = set(os.listdir(cache))
  assert len(entries) >= 3  # the teacher's and the prune phase's steps, evaluation, …
  second = _synthetic_run(tmp_path / "b", cache)
  assert second.returncode == 0, second.stderr[-2000:]
  # Every program of the second run (the epoch, evaluation, the plateau rule, small ops) came
  # from the cache: not one new entry.
  assert set(os.listdir(cache)) == entries, set(os.listdir(cache)) - entries
  assert any(name.startswith("jit_train_epoch") for name in entries)
  off = _synthetic_run(tmp_path / "c", "off")  # and with the cache off, none is written
  assert off.returncode == 0 and set(os.listdir(cache)) == entries
  assert not os.path.exists(f"{tmp_path}/c_xdg") and not os.path.exists(f"{REPO}/off")
