"""Baselines at equal budget: soft, scratch, one_shot, gmp, distill beside alpha_blend."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alphaprune import blending, checkpoint, devices, losses, masks as masks_lib, methods, models
from alphaprune import steps, train, tree
from alphaprune import optimizer as opt_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import fashion_mnist  # noqa: E402

METHODS = methods.METHODS


def _config(tmp_path, method, **extra):
  c = fashion_mnist.get_config("smoke")
  c.method = method
  c.data.update(data_dir=str(tmp_path / "tfds"), prepare=True, manual_dir="")
  c.gmp.update_every = 2
  c.update_from_flattened_dict(extra)  # dotted keys, as on the command line
  return c


def _run(config, workdir):
  with tfds.testing.mock_data(num_examples=120):
    return train.run(config, str(workdir))


# Stages of 3 epochs with patience 1 and an improvement no epoch can make: the plateau rule
# cuts the rate after the second epoch of every stage, so the rate's trace shows each reset.
PLATEAU = {"train.max_epochs_per_stage": 3, "train.plateau.patience": 1,
           "train.plateau.min_delta": 100.0, "train.plateau.factor": 0.5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("methods")
  out = {"alpha_blend": _run(_config(root, "alpha_blend", **PLATEAU), root / "alpha_blend")}
  teacher = str(root / "alpha_blend" / "teacher")
  for method in METHODS[1:]:
    out[method] = _run(_config(root, method, **PLATEAU, **{"teacher.checkpoint": teacher,
                                                          "checkpoint.keep": 100}),
                       root / method)
  return root, out


def test_every_method_meets_the_keep_ratio_with_a_complete_summary(runs):
  root, summaries = runs
  required = {"method", "teacher_test_accuracy", "pruned_test_accuracy", "keep_ratio",
              "prunable_params", "kept_prunable_params", "params_total_before",
              "params_total_after", "alphas", "epochs_total", "wall_seconds"}
  for method, s in summaries.items():
    assert required <= set(s) and s["method"] == method
    # per layer round(0.35·size): within one weight per layer of 35%
    assert abs(s["kept_prunable_params"] - 0.35 * s["prunable_params"]) <= 3, method
    variables, _ = checkpoint.load_model(str(root / method / "export"))
    nonzero = sum(int(np.count_nonzero(v)) for p, v in tree.flatten(variables["params"]).items()
                  if p.endswith("kernel"))
    assert nonzero <= s["kept_prunable_params"], method
    assert s["pruned_test_accuracy"] == s["blended_alpha0_test_accuracy"]


def test_all_methods_get_the_same_epoch_budget_and_teacher(runs):
  _, summaries = runs
  assert len({s["epochs_total"] for s in summaries.values()}) == 1
  assert summaries["gmp"]["epochs_total"] == 2 * 3 + 1  # 2 stages × 3 epochs + 1 fine-tuning
  assert len({s["teacher_test_accuracy"] for s in summaries.values()}) == 1


def test_every_method_walks_the_alpha_runs_stages_with_its_learning_rate(runs):
  """The same stage boundaries, the rate reset at each and cut by the plateau rule inside:
  every method's trace of (phase, stage, learning rate) per epoch is alpha_blend's."""
  root, _ = runs
  traces = {}
  for method in METHODS:
    with open(root / method / "metrics.jsonl") as f:
      records = [json.loads(line) for line in f]
    traces[method] = [(r["phase"], r["stage"], r["lr"]) for r in records
                      if r["phase"] != "pretrain"]
  assert [lr for _, _, lr in traces["alpha_blend"]] == pytest.approx(
      [1e-3, 1e-3, 5e-4, 1e-3, 1e-3, 5e-4, 1e-3])
  for method, trace in traces.items():
    assert trace == traces["alpha_blend"], method


def _gmp_run(hidden, classes, gmp, steps_taken):
  """A gmp state after each of `steps_taken` real train steps on one fixed batch."""
  model = models.MLP(hidden=hidden, num_classes=classes)
  x = jax.random.normal(jax.random.key(0), (16, 6))
  variables = model.init(jax.random.key(1), x)
  ones = jax.tree.map(lambda w: np.ones(w.shape, bool),
                      tree.subset(variables["params"], masks_lib.prunable_paths(variables["params"])))
  params, model_state, masks = methods.initial_params("gmp", "layer", jax.random.key(2),
                                                      variables, ones, "he_normal")
  opt = opt_lib.make_optimizer(learning_rate=0.01)
  state = steps.init_state(params, model_state, masks, opt.tx, 0)
  cfg = steps.StepConfig(model=model, loss=losses.Loss(), mean=(0.0,), std=(1.0,),
                         mesh=devices.make_mesh(), tx=opt.tx, gmp=gmp)
  step = jax.jit(steps.train_step, static_argnames="cfg")
  batch = {"image": jnp.clip(x * 40 + 128, 0, 255).astype(jnp.uint8),
           "label": jnp.arange(16) % classes}
  for _ in range(steps_taken):
    state, _ = step(state, batch, {}, cfg)
    yield state


SHAPES = {(40,): {"fc1/dense/kernel": (6, 40), "head/dense/kernel": (40, 3)},
          (2,): {"fc1/dense/kernel": (6, 2), "head/dense/kernel": (2, 2)}}


def test_gmp_follows_the_cubic_schedule_and_ends_at_the_target():
  # Updates every 3 steps over the first 12 of a 12-step budget: 4 updates after the first.
  gmp = methods.gmp_settings(3, 1.0, 0.0, 0.35, 12, SHAPES[(40,)], "layer")
  assert (gmp.every, gmp.updates, gmp.final_sparsity) == (3, 4, pytest.approx(0.65))
  sizes = {"fc1/dense/kernel": 6 * 40, "head/dense/kernel": 40 * 3}
  for t, state in enumerate(_gmp_run((40,), 3, gmp, 20)):
    kept = {p: int(np.sum(m)) for p, m in tree.flatten(state.masks).items()}
    k = min(t // 3, 4)
    s_k = 0.65 + (0.0 - 0.65) * (1 - k / 4) ** 3  # the formula, by hand
    assert kept == {p: round((1 - s_k) * size) for p, size in sizes.items()}, t
    for w, m in zip(jax.tree.leaves(state.params["student"]), jax.tree.leaves(state.masks)):
      assert np.all(np.asarray(w)[~np.asarray(m)] == 0)
  assert kept == {p: round(0.35 * size) for p, size in sizes.items()}


def test_gmp_never_empties_a_tiny_layer():
  # A (2, 2) head at 95% sparsity: round(0.05 · 4) = 0, but one weight stays.
  gmp = methods.gmp_settings(1, 1.0, 0.0, 0.05, 2, SHAPES[(2,)], "layer")
  *_, state = _gmp_run((2,), 2, gmp, 4)
  kept = {p: int(np.sum(m)) for p, m in tree.flatten(state.masks).items()}
  assert kept == {"fc1/dense/kernel": 1, "head/dense/kernel": 1}  # 6·2·0.05 → 1; 4·0.05 → 1


def test_stages_give_every_method_the_alpha_runs_stages_and_budget():
  alphas = [0.6, 0.3, 0.0]
  blend = methods.stages("alpha_blend", alphas, 4, 2)
  stage = methods.Stage
  assert blend == [stage("prune", 0.6, 4), stage("prune", 0.3, 4), stage("prune", 0.0, 4),
                   stage("finetune", 0.0, 2)]
  assert methods.stages("soft", alphas, 4, 2) == blend
  equal = [stage("prune", 0.0, 4)] * 3 + [stage("finetune", 0.0, 2)]  # the same boundaries
  for method in set(METHODS) - set(methods.STAGED) - {"imp"}:
    assert methods.stages(method, alphas, 4, 2) == equal
    assert methods.stages(method, alphas, 4, 2, "merged") == [stage("prune", 0.0, 12),
                                                               stage("finetune", 0.0, 2)]
  assert methods.stages("gmp", alphas, 4, 0) == equal[:3]


def test_imp_prunes_the_same_fraction_of_what_is_left_each_round():
  stages = methods.stages("imp", [0.75, 0.5, 0.25, 0.0], 2, 1, keep_ratio=0.1)
  assert [stage.max_epochs for stage in stages] == [2, 2, 2, 2, 1]
  np.testing.assert_allclose([stage.prune_to for stage in stages[:4]],
                             [0.1 ** 0.25, 0.1 ** 0.5, 0.1 ** 0.75, 0.1])
  assert stages[4].prune_to is None  # fine-tuning prunes nothing
  two = methods.stages("imp", [0.75, 0.5, 0.25, 0.0], 2, 0, keep_ratio=0.1, imp_rounds=2)
  assert [stage.prune_to for stage in two] == [pytest.approx(0.1 ** 0.5), None, 0.1, None]


def test_one_shot_starts_from_exactly_the_masked_teacher(runs):
  root, _ = runs
  teacher, _ = checkpoint.load_model(str(root / "alpha_blend" / "teacher"))
  ckpt = checkpoint.RunCheckpoints(str(root / "one_shot" / "checkpoints" / "prune"))
  first = ckpt.restore(0, None)[0]
  masks = first["masks"]
  for path, mask in tree.flatten(masks).items():
    want = np.asarray(tree.flatten(teacher["params"])[path]) * np.asarray(mask)
    np.testing.assert_array_equal(tree.flatten(first["params"]["student"])[path], want)
  assert first["params"]["teacher"] == {}


def test_scratch_reads_the_teacher_only_through_its_mask(runs, tmp_path):
  root, summaries = runs
  teacher, meta = checkpoint.load_model(str(root / "alpha_blend" / "teacher"))
  # Twice the teacher: different weights, same magnitude order, hence the same masks.
  doubled = jax.tree.map(lambda v: np.asarray(v) * 2, teacher)
  checkpoint.save_model(str(tmp_path / "doubled"), doubled, meta)
  again = _run(_config(root, "scratch", **PLATEAU,
                       **{"teacher.checkpoint": str(tmp_path / "doubled")}), tmp_path / "scratch")
  a, _ = checkpoint.load_model(str(root / "scratch" / "export"))
  b, _ = checkpoint.load_model(str(tmp_path / "scratch" / "export"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert again["pruned_test_accuracy"] == summaries["scratch"]["pruned_test_accuracy"]


def test_soft_starts_as_the_teacher_and_trains_its_pruned_weights(runs):
  """soft: one tensor W from the teacher; at α = 1 exactly the teacher, its pruned entries
  keep training (scaled by α), and the export is M ⊙ W."""
  root, summaries = runs
  teacher, _ = checkpoint.load_model(str(root / "alpha_blend" / "teacher"))
  ckpt = checkpoint.RunCheckpoints(str(root / "soft" / "checkpoints" / "prune"))
  first = ckpt.restore(0, None)[0]
  masks = tree.flatten(first["masks"])
  at_one = tree.flatten(blending.model_params("soft", 1.0, first["params"], first["masks"]))
  for path, value in tree.flatten(teacher["params"]).items():
    np.testing.assert_array_equal(at_one[path], value)  # every parameter, exactly
  first_stage_end = min(json.loads((root / "soft" / "checkpoints" / "prune" /
                                    "stage_ends.json").read_text()))
  after = ckpt.restore(first_stage_end, None)[0]  # the end of the first stage (α = 0.5)
  for path, mask in masks.items():
    pruned = ~np.asarray(mask)
    moved = tree.flatten(after["params"]["student"])[path][pruned] != \
        np.asarray(tree.flatten(teacher["params"])[path])[pruned]
    assert moved.mean() > 0.5, path  # the pruned entries train too
  final, _ = checkpoint.load_model(str(root / "soft" / "export"))
  last = ckpt.restore(ckpt.steps()[-1], None)[0]
  for path, mask in masks.items():
    np.testing.assert_array_equal(tree.flatten(final["params"])[path],
                                  tree.flatten(last["params"]["student"])[path] * mask)
  assert summaries["soft"]["alphas"] == summaries["alpha_blend"]["alphas"]


@pytest.mark.parametrize("scope", ["layer", "global", "erk", "lamp"])
def test_gmp_allocates_its_final_masks_as_the_fixed_masks_do(scope):
  """At its last update, gmp inside the step keeps what `compute_masks` keeps from the same
  weights with the same scope (two updates: dense, then the keep ratio)."""
  rng = np.random.default_rng(1)
  student = {"a": {"kernel": jnp.asarray(rng.normal(size=(30, 20)), jnp.float32)},
             "b": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 5)) * 0.3, jnp.float32)},
             "c": {"kernel": jnp.asarray(rng.normal(size=(20, 3)) * 3.0, jnp.float32)}}
  shapes = {f"{name}/kernel": tuple(v["kernel"].shape) for name, v in student.items()}
  ones = jax.tree.map(lambda w: jnp.ones(w.shape, bool), student)
  gmp = methods.gmp_settings(1, 1.0, 0.0, 0.2, 1, shapes, scope)
  got = jax.jit(methods.gmp_masks, static_argnums=3)(student, ones, jnp.int32(1), gmp)
  want = masks_lib.compute_masks(jax.tree.map(np.asarray, student), keep_ratio=0.2, scope=scope)
  for path, mask in tree.flatten(want).items():
    np.testing.assert_array_equal(np.asarray(tree.flatten(got)[path]), mask, err_msg=path)
  first = jax.jit(methods.gmp_masks, static_argnums=3)(student, ones, jnp.int32(0), gmp)
  assert all(np.asarray(m).all() for m in jax.tree.leaves(first))  # update 0: sparsity 0
