"""Layer-form blend = explicit two-branch network, in outputs and student gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphaprune import blending as blend, masks as masks_lib, models, tree


class TinyMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train=False, alpha=None):
    x = nn.relu(nn.Dense(16, name="fc1")(x))
    return nn.Dense(5, name="out")(x)


class TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x, train=False, alpha=None):
    x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(3, name="out")(x)


def two_branch_mlp(alpha, t, s, m, shared, x):
  """α·f(x; W_t) + (1−α)·f(x; M⊙W_s) per layer, biases shared, written out by hand."""
  def layer(name, h):
    wt, ws = t[name]["kernel"], s[name]["kernel"] * m[name]["kernel"]
    return alpha * (h @ wt) + (1 - alpha) * (h @ ws) + shared[name]["bias"]
  return layer("out", jax.nn.relu(layer("fc1", x)))


def two_branch_cnn(alpha, t, s, m, shared, x):
  def conv(w, h):
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = alpha * conv(t["conv"]["kernel"], x) + (1 - alpha) * conv(
      s["conv"]["kernel"] * m["conv"]["kernel"], x) + shared["conv"]["bias"]
  h = jax.nn.relu(h).reshape((x.shape[0], -1))
  return alpha * (h @ t["out"]["kernel"]) + (1 - alpha) * (
      h @ (s["out"]["kernel"] * m["out"]["kernel"])) + shared["out"]["bias"]


def _setup(model, x_shape, seed=0):
  x = jax.random.normal(jax.random.key(seed), x_shape)
  params = model.init(jax.random.key(1), x)["params"]
  masks = masks_lib.compute_masks(params, keep_ratio=0.4, criterion="random",
                                  key=jax.random.key(2))
  teacher, shared = blend.split(params, masks)
  student = blend.init_student(jax.random.key(3), teacher, masks)
  return x, teacher, student, masks, shared


@pytest.mark.parametrize("model,x_shape,explicit", [
    (TinyMLP(), (7, 10), two_branch_mlp),
    (TinyCNN(), (3, 6, 6, 2), two_branch_cnn),
])
@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.0])
def test_layer_form_equals_two_branch(model, x_shape, explicit, alpha):
  x, teacher, student, masks, shared = _setup(model, x_shape)

  def loss_layer(s):
    return jnp.sum(jnp.sin(model.apply({"params": blend.blend(alpha, teacher, s, masks, shared)}, x)))

  def loss_explicit(s):
    return jnp.sum(jnp.sin(explicit(alpha, teacher, s, masks, shared, x)))

  out_layer = model.apply({"params": blend.blend(alpha, teacher, student, masks, shared)}, x)
  out_explicit = explicit(alpha, teacher, student, masks, shared, x)
  np.testing.assert_allclose(out_layer, out_explicit, atol=1e-5, rtol=1e-5)
  g_layer, g_explicit = jax.grad(loss_layer)(student), jax.grad(loss_explicit)(student)
  for a, b in zip(jax.tree.leaves(g_layer), jax.tree.leaves(g_explicit)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  # The gradient reaching the student is (1−α)·M⊙∂L/∂W: zero wherever M = 0.
  for g, m in zip(jax.tree.leaves(g_layer), jax.tree.leaves(masks)):
    assert np.all(np.asarray(g)[~np.asarray(m)] == 0)


def test_alpha_one_is_the_teacher_exactly():
  model = TinyCNN()
  x, teacher, student, masks, shared = _setup(model, (3, 6, 6, 2))
  want = model.apply({"params": tree.merge(teacher, shared)}, x)
  got = model.apply({"params": blend.blend(1.0, teacher, student, masks, shared)}, x)
  np.testing.assert_array_equal(got, want)


def test_alpha_zero_ignores_the_teacher():
  model = TinyMLP()
  x, teacher, student, masks, shared = _setup(model, (7, 10))
  out = model.apply({"params": blend.blend(0.0, teacher, student, masks, shared)}, x)
  perturbed = jax.tree.map(lambda t: t + 3.0, teacher)
  out2 = model.apply({"params": blend.blend(0.0, perturbed, student, masks, shared)}, x)
  np.testing.assert_array_equal(out, out2)


def test_he_normal_student_statistics_and_masking():
  w = {"d": {"kernel": jnp.zeros((400, 300))}}
  m = {"d": {"kernel": jnp.asarray(np.random.default_rng(0).random((400, 300)) < 0.5)}}
  s = blend.init_student(jax.random.key(0), w, m, "he_normal")["d"]["kernel"]
  kept = np.asarray(s)[np.asarray(m["d"]["kernel"])]
  assert np.all(np.asarray(s)[~np.asarray(m["d"]["kernel"])] == 0)
  # truncated normal with std √(2/fan_in)
  assert abs(kept.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
  copy = blend.init_student(None, {"d": {"kernel": jnp.ones((4, 3))}},
                            {"d": {"kernel": jnp.eye(4, 3, dtype=bool)}}, "copy")
  np.testing.assert_array_equal(copy["d"]["kernel"], np.eye(4, 3))


def test_block_form_mixes_whole_units_and_exports_the_student():
  model = models.LeNet5(num_classes=4)
  block = models.LeNet5(num_classes=4, blend_form="block")
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.5)
  params, model_state, bmasks = blend.init_params("block", jax.random.key(2), variables, masks)
  full = lambda a: {"params": blend.model_params("block", a, params, bmasks), **model_state}
  # α = 1: the teacher branch alone reproduces the dense teacher.
  np.testing.assert_allclose(block.apply(full(1.0), x, alpha=1.0), model.apply(variables, x),
                             atol=1e-5)
  # α = 0: the student branch alone equals the exported plain model.
  exported = blend.export_variables("block", params, model_state, bmasks)
  np.testing.assert_allclose(block.apply(full(0.0), x, alpha=0.0), model.apply(exported, x),
                             atol=1e-5)


def _block_by_hand(alpha, flat, x):
  """Block form of MLP(hidden=(6,)) written out: each unit's branches are whole
  (linear → ReLU), mixed after the activation; the head's branches are linear."""
  def branch(unit, who, h, act):
    y = h @ flat[f"{unit}/{who}/dense/kernel"] + flat[f"{unit}/{who}/dense/bias"]
    return jax.nn.relu(y) if act else y

  def unit(name, h, act=True):
    return alpha * branch(name, "teacher", h, act) + (1 - alpha) * branch(name, "student", h, act)
  return unit("head", unit("fc1", x), act=False)


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_block_form_mid_alpha_mixes_each_units_activated_branches(alpha):
  model = models.MLP(hidden=(6,), num_classes=3)
  block = models.MLP(hidden=(6,), num_classes=3, blend_form="block")
  x = jax.random.normal(jax.random.key(0), (5, 4))
  variables = model.init(jax.random.key(1), x)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.5)
  params, model_state, bmasks = blend.init_params("block", jax.random.key(2), variables, masks)
  # Train-like biases, so that each branch's ReLU cuts somewhere different.
  params = jax.tree.map(lambda v: v + 0.3 * jax.random.normal(jax.random.key(3), v.shape), params)
  merged = blend.model_params("block", alpha, params, bmasks)
  got = block.apply({"params": merged}, x, alpha=alpha)
  want = _block_by_hand(alpha, tree.flatten(merged), x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # The student branch sees its masked kernel: pruned entries of `merged` are zero.
  flat, fm = tree.flatten(merged), tree.flatten(bmasks)
  assert all(np.all(np.asarray(flat[p])[~np.asarray(m)] == 0) for p, m in fm.items())


def test_soft_kernel_is_the_blend_with_teacher_and_student_tied():
  """(M + α(1−M)) ⊙ W: W at α = 1 and M ⊙ W at α = 0 exactly; α·W + (1−α)·M⊙W between."""
  w = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (5, 4))}}
  m = {"fc": {"kernel": jax.random.bernoulli(jax.random.key(1), 0.35, (5, 4))}}
  shared = {"fc": {"bias": jnp.arange(4.0)}}
  params = {"teacher": {}, "student": w, "shared": shared}
  one = blend.model_params("soft", 1.0, params, m)
  zero = blend.model_params("soft", 0.0, params, m)
  np.testing.assert_array_equal(one["fc"]["kernel"], w["fc"]["kernel"])
  np.testing.assert_array_equal(zero["fc"]["kernel"], w["fc"]["kernel"] * m["fc"]["kernel"])
  np.testing.assert_array_equal(zero["fc"]["bias"], shared["fc"]["bias"])
  for alpha in (0.3, 0.8):
    got = blend.model_params("soft", alpha, params, m)["fc"]["kernel"]
    mask = m["fc"]["kernel"].astype(jnp.float32)
    np.testing.assert_allclose(got, (mask + alpha * (1 - mask)) * w["fc"]["kernel"], rtol=1e-6)
    tied = blend.blend(alpha, w, w, m, shared)["fc"]["kernel"]
    np.testing.assert_allclose(got, tied, rtol=1e-6, atol=1e-7)


def test_each_branch_has_its_own_bias_blended_like_its_kernel():
  """init_params (layer form): the teacher's branch is each layer's kernel and bias, the
  student's its masked kernel and its own bias, starting as a copy of the teacher's; the
  blend is α·(x W_t + b_t) + (1−α)·(x M⊙W_s + b_s) per layer."""
  model = TinyMLP()
  x = jax.random.normal(jax.random.key(0), (7, 10))
  variables = model.init(jax.random.key(1), x)
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.4, criterion="random",
                                  key=jax.random.key(2))
  params, _, _ = blend.init_params("layer", jax.random.key(3), variables, masks)
  assert set(tree.flatten(params["teacher"])) == set(tree.flatten(params["student"])) == {
      "fc1/kernel", "fc1/bias", "out/kernel", "out/bias"}
  assert params["shared"] == {}
  for name in ("fc1", "out"):
    np.testing.assert_array_equal(params["student"][name]["bias"], params["teacher"][name]["bias"])
  student = jax.tree.map(lambda v: v + 0.5, params["student"])  # biases apart, as trained
  t, s = params["teacher"], student
  for alpha in (0.0, 0.4, 1.0):
    def layer(name, h):
      return (alpha * (h @ t[name]["kernel"] + t[name]["bias"]) + (1 - alpha) * (
          h @ (s[name]["kernel"] * masks[name]["kernel"]) + s[name]["bias"]))
    want = layer("out", jax.nn.relu(layer("fc1", x)))
    got = model.apply({"params": blend.blend(alpha, t, s, masks, {})}, x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_he_sparse_starts_a_masked_layer_at_a_dense_he_layers_output_variance():
  """With unit-variance inputs a dense He layer's outputs have variance 2 (fan-in × 2/fan-in);
  masked to 10%, He-normal gives 0.2, He scaled to each unit's kept fan-in gives 2 again."""
  fan_in, units, keep = 1000, 400, 0.1
  rng = np.random.default_rng(0)
  mask = {"d": {"kernel": jnp.asarray(rng.random((fan_in, units)) < keep)}}
  dense_mask = {"d": {"kernel": jnp.ones((fan_in, units), bool)}}
  zeros = {"d": {"kernel": jnp.zeros((fan_in, units))}}
  x = jnp.asarray(rng.normal(size=(4000, fan_in)), jnp.float32)
  variance = lambda init, m: float(jnp.var(x @ blend.init_student(
      jax.random.key(1), zeros, m, init)["d"]["kernel"]))
  dense = variance("he_normal", dense_mask)
  assert dense == pytest.approx(2.0, rel=0.05)
  assert variance("he_normal", mask) == pytest.approx(keep * dense, rel=0.1)
  assert variance("he_sparse", mask) == pytest.approx(dense, rel=0.05)
  sparse = blend.init_student(jax.random.key(1), zeros, mask, "he_sparse")["d"]["kernel"]
  assert np.all(np.asarray(sparse)[~np.asarray(mask["d"]["kernel"])] == 0)


def test_he_init_of_a_dense_general_kernel_uses_its_contracting_axes():
  """A query kernel [64 inputs, 4 heads, 16]: fan-in 64, so std √(2/64); JAX's default axes
  would take 4·64 and start it half as large."""
  kernel = {"q": {"kernel": jnp.zeros((64, 4, 16))}}
  ones = {"q": {"kernel": jnp.ones((64, 4, 16), bool)}}
  right = blend.init_student(jax.random.key(0), kernel, ones, "he_normal",
                             axes={"q/kernel": (0,)})["q"]["kernel"]
  assert float(jnp.std(right)) == pytest.approx(np.sqrt(2 / 64), rel=0.05)
  default = blend.init_student(jax.random.key(0), kernel, ones, "he_normal")["q"]["kernel"]
  assert float(jnp.std(default)) == pytest.approx(np.sqrt(2 / 256), rel=0.05)
