import jax.numpy as jnp
import numpy as np

from alphaprune import checkpoint


def test_run_checkpoints_keep_latest_and_stage_ends(tmp_path):
  ckpt = checkpoint.RunCheckpoints(str(tmp_path / "c"), keep=2)
  state = {"w": jnp.arange(3.0), "step": jnp.int32(0)}
  for step in range(6):
    ckpt.save(step, {**state, "step": jnp.int32(step)}, {"history": [step]}, stage_end=step == 1)
  assert ckpt.steps() == [1, 4, 5]
  _, restored, meta = ckpt.restore_latest(state)
  assert int(restored["step"]) == 5 and meta == {"history": [5]}
  # The stage-end set survives a restart of the process.
  again = checkpoint.RunCheckpoints(str(tmp_path / "c"), keep=2)
  again.save(6, state, {"history": []})
  assert again.steps() == [1, 5, 6]


def test_unreadable_latest_falls_back_and_is_moved_aside(tmp_path):
  ckpt = checkpoint.RunCheckpoints(str(tmp_path / "c"), keep=3)
  for step in range(3):
    ckpt.save(step, {"w": jnp.full(2, float(step))}, {"history": [step]})
  (tmp_path / "c" / "2" / "meta" / "metadata").write_text("{not json")
  _, restored, meta = ckpt.restore_latest({"w": jnp.zeros(2)})
  np.testing.assert_array_equal(restored["w"], [1.0, 1.0])
  assert ckpt.steps() == [0, 1]
  assert len(list((tmp_path / "c.unreadable").iterdir())) == 1
  assert meta == {"history": [1]}
  ckpt.save(2, {"w": jnp.full(2, 7.0)}, {"history": [2]})  # the step can be written again
  step, restored, meta = ckpt.restore_latest({"w": jnp.zeros(2)})
  assert (step, meta) == (2, {"history": [2]})
  np.testing.assert_array_equal(restored["w"], [7.0, 7.0])
  aside = next((tmp_path / "c.unreadable").iterdir())
  assert aside.name.startswith("2-") and (aside / "meta" / "metadata").read_text() == "{not json"


def test_save_and_load_a_standalone_model(tmp_path):
  variables = {"params": {"d": {"kernel": np.ones((2, 3), np.float32)}}}
  checkpoint.save_model(str(tmp_path / "m"), variables, {"note": "x"})
  loaded, meta = checkpoint.load_model(str(tmp_path / "m"))
  np.testing.assert_array_equal(loaded["params"]["d"]["kernel"], np.ones((2, 3)))
  assert meta == {"note": "x"}
  assert checkpoint.model_shapes(str(tmp_path / "m")) == {"['params']['d']['kernel']": (2, 3)}
