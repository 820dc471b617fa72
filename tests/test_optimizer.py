"""The optax chain: frozen teacher, masked student, Keras plateau semantics, one compilation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alphaprune import blending as blend, devices, losses, masks as masks_lib, models, steps, tree
from alphaprune import optimizer as opt_lib
from alphaprune.data import order


def _blended_setup(teacher_trainable, optimizer="sgd"):
  model = models.MLP(hidden=(16,), num_classes=3)
  x = jax.random.normal(jax.random.key(0), (32, 5))
  y = jax.random.randint(jax.random.key(1), (32,), 0, 3)
  variables = model.init(jax.random.key(2), x)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.3, criterion="random",
                                  key=jax.random.key(3))
  params, model_state, masks = blend.init_params("layer", jax.random.key(4), variables, masks)
  opt = opt_lib.make_optimizer(optimizer=optimizer, learning_rate=0.1,
                               teacher_trainable=teacher_trainable)
  state = steps.init_state(params, model_state, masks, opt.tx, seed=0)
  cfg = steps.StepConfig(model=model, loss=losses.Loss(), mean=(0.0,), std=(1.0,),
                         mesh=devices.make_mesh(), tx=opt.tx)
  step = functools.partial(jax.jit(steps.train_step, static_argnames="cfg"), cfg=cfg)
  images = jnp.clip(x * 40 + 128, 0, 255).astype(jnp.uint8)
  return state.replace(alpha=jnp.float32(0.6)), step, {"image": images, "label": y}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_chain_never_moves_a_pruned_weight_or_a_frozen_teacher(optimizer):
  """Whatever gradient reaches them (here: ones everywhere, as a regulariser on the raw
  student would give), pruned student weights and the frozen teacher get no update; kept
  student weights and the shared part do."""
  state, _, _ = _blended_setup(teacher_trainable=False, optimizer=optimizer)
  opt = opt_lib.make_optimizer(optimizer=optimizer, learning_rate=0.1)
  grads = jax.tree.map(jnp.ones_like, state.params)
  updates, _ = opt.tx.update(grads, opt.tx.init(state.params), state.params, masks=state.masks)
  for update in jax.tree.leaves(updates["teacher"]):
    assert np.all(np.asarray(update) == 0)
  flat_updates, flat_masks = tree.flatten(updates["student"]), tree.flatten(state.masks)
  for path, update in flat_updates.items():
    update = np.asarray(update)
    if path in flat_masks:  # a kernel: exactly zero where pruned, moving where kept
      mask = np.asarray(flat_masks[path])
      assert np.all(update[~mask] == 0) and np.all(update[mask] != 0), path
    else:  # the student's own bias
      assert np.all(update != 0), path


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_entries_stay_zero_and_frozen_teacher_stays_put(optimizer):
  state, step, batch = _blended_setup(teacher_trainable=False, optimizer=optimizer)
  teacher0 = jax.tree.map(np.array, state.params["teacher"])
  student0 = tree.flatten(jax.tree.map(np.array, state.params["student"]))
  masks = {path: np.asarray(mask) for path, mask in tree.flatten(state.masks).items()}
  for _ in range(10):
    state, _ = step(state, batch, {})
  student = tree.flatten(state.params["student"])
  for path, mask in masks.items():
    weights = np.asarray(student[path])
    assert np.all(weights[~mask] == 0)
    assert not np.allclose(weights[mask], student0[path][mask])  # kept ones learn
  # The frozen teacher's branch, kernels and biases alike, is bit for bit where it was.
  assert set(tree.flatten(teacher0)) == {"fc1/dense/kernel", "fc1/dense/bias",
                                         "head/dense/kernel", "head/dense/bias"}
  for now, before in zip(jax.tree.leaves(state.params["teacher"]), jax.tree.leaves(teacher0),
                         strict=True):
    np.testing.assert_array_equal(now, before)


def test_trainable_teacher_changes():
  state, step, batch = _blended_setup(teacher_trainable=True)
  teacher0 = jax.tree.map(np.array, state.params["teacher"])
  for _ in range(10):
    state, _ = step(state, batch, {})
  changed = [not np.allclose(t, t0) for t, t0 in
             zip(jax.tree.leaves(state.params["teacher"]), jax.tree.leaves(teacher0))]
  assert all(changed)


def _order(arrays, cfg):
  return devices.put_replicated(order.epoch_order(0, 0, arrays["label"].shape[0]), cfg.mesh)


def test_three_alphas_compile_once():
  state, _, batch = _blended_setup(teacher_trainable=False)
  model = models.MLP(hidden=(16,), num_classes=3)
  cfg = steps.StepConfig(model=model, loss=losses.Loss(), mean=(0.0,), std=(1.0,),
                         mesh=devices.make_mesh(), tx=opt_lib.make_optimizer(learning_rate=0.1).tx,
                         batch_size=8)
  arrays = {"image": jnp.concatenate([batch["image"]] * 2), "label": jnp.concatenate([batch["label"]] * 2)}
  state, arrays = devices.put_replicated((state, arrays), cfg.mesh)  # as the driver places them
  with steps.count_compilations("train_epoch") as compiled:
    for alpha in (0.9, 0.5, 0.0):
      state = state.replace(alpha=jnp.float32(alpha))
      state, metrics = steps.train_epoch(state, arrays, _order(arrays, cfg), {}, cfg)
      assert np.isfinite(metrics["loss"])
  assert compiled["count"] == 1
  # The counter is not blind: a new batch size is a new program.
  with steps.count_compilations("train_epoch") as compiled:
    steps.train_epoch(state, arrays, _order(arrays, cfg), {},
                      cfg.__class__(**{**cfg.__dict__, "batch_size": 16}))
  assert compiled["count"] == 1


def _lr_sequence(losses, **plateau):
  opt = opt_lib.make_optimizer(learning_rate=1.0, **plateau)
  params = {"teacher": {}, "student": {"w": jnp.zeros(2)}, "shared": {}}
  state = opt.tx.init(params)
  seq = []
  for v in losses:
    state = opt_lib.observe_validation_loss(opt, state, jnp.float32(v))
    seq.append(float(opt_lib.lr_scale(state)))
  return seq, opt, state, params


def test_plateau_matches_hand_computed_keras_sequence():
  # patience 2, factor 0.5, cooldown 2, min_delta 0.01, min_lr 0.2 — worked out by hand
  # with Keras's ReduceLROnPlateau.on_epoch_end:
  losses = [1.0, 0.9, 0.95, 0.905, 0.91, 0.8, 0.85, 0.86, 0.87, 0.9, 0.91, 0.92, 0.93, 0.94]
  # epoch:  1: best 1.0 | 2: best .9 | 3: wait 1 | 4: wait 2 → cut to .5, cooldown 2
  # 5: cooldown 2→1, wait 0 (no count) | 6: cooldown 1→0, improved, best .8
  # 7: wait 1 | 8: wait 2 → .25, cooldown 2 | 9: cooldown→1 | 10: cooldown→0, then
  # not in cooldown: wait 1 | 11: wait 2 → max(.125, .2) = .2 | 12–14: at min_lr
  want = [1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .2, .2, .2, .2]
  got, opt, state, params = _lr_sequence(losses, factor=0.5, patience=2, cooldown=2,
                                         min_delta=0.01, min_lr=0.2)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # a new stage restores the initial learning rate and forgets the best value
  reset = opt_lib.reset_stage(opt, state, params)
  assert float(opt_lib.lr_scale(reset)) == 1.0
  plateau = [s for s in jax.tree.leaves(reset, is_leaf=lambda s: isinstance(
      s, optax.contrib.ReduceLROnPlateauState)) if isinstance(s, optax.contrib.ReduceLROnPlateauState)]
  assert np.isinf(plateau[0].best_value) and int(plateau[0].plateau_count) == 0


def test_reset_can_clear_momentum():
  state, step, batch = _blended_setup(teacher_trainable=False)
  state, _ = step(state, batch, {})
  opt = opt_lib.make_optimizer(learning_rate=0.1)
  kept = opt_lib.reset_stage(opt, state.opt_state, state.params, clear_momentum=False)
  cleared = opt_lib.reset_stage(opt, state.opt_state, state.params, clear_momentum=True)
  traces = lambda s: [x for x in jax.tree.leaves(s) if x.ndim > 0]
  assert any(np.any(np.asarray(t) != 0) for t in traces(kept))
  assert all(np.all(np.asarray(t) == 0) for t in traces(cleared))


@pytest.mark.parametrize("settings,needle", [
    ({"patience": 0}, "patience=0"),
    ({"learning_rate": 0.1, "min_lr": 0.5}, "min_lr=0.5"),
    ({"learning_rate": 0.1, "min_lr": 0.1}, "min_lr=0.1"),
    ({"min_delta": 0.0}, "min_delta=0.0"),
    ({"min_delta": -1e-3}, "min_delta=-0.001"),
    ({"factor": 1.0}, "factor=1.0"),
])
def test_make_optimizer_refuses_settings_the_plateau_rule_would_misuse(settings, needle):
  with pytest.raises(ValueError) as e:
    opt_lib.make_optimizer(**settings)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_without_the_check_patience_zero_would_cut_an_improving_run():
  # Why patience=0 is refused: optax itself then cuts after every epoch, improving or not.
  plateau = optax.contrib.reduce_on_plateau(factor=0.5, patience=0, atol=1e-4, rtol=0.0)
  state = plateau.init({})
  for loss in (1.0, 0.9, 0.8):
    _, state = plateau.update({}, state, value=jnp.float32(loss))
  assert float(state.scale) < 1.0
