"""devices: one 1-D mesh; replicated state, batches split along "data"."""

import jax
import numpy as np

from alphaprune import devices


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
