"""Masks meet the keep ratio exactly, in parameters, for every structure."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphaprune import masks as masks_lib, models, tree


def _params(model, shape):
  return model.init(jax.random.key(0), jnp.zeros((1,) + shape))["params"]


def _forward_order(model, shape):
  return masks_lib.prunable_paths(
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape))["params"])


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_unstructured_keep_ratio_is_exact(scope, criterion):
  params = _params(models.LeNet5(), (28, 28, 1))
  masks = masks_lib.compute_masks(params, keep_ratio=0.35, scope=scope, criterion=criterion,
                                  key=jax.random.key(1))
  flat = tree.flatten(masks)
  assert set(flat) == {p for p in tree.flatten(params) if p.endswith("kernel")}
  total = sum(m.size for m in flat.values())
  kept = sum(int(m.sum()) for m in flat.values())
  if scope == "layer":
    for m in flat.values():  # ± one weight per layer (rounding)
      assert abs(int(m.sum()) - 0.35 * m.size) <= 1
  assert abs(kept - 0.35 * total) <= (len(flat) if scope == "layer" else 1)


def test_magnitude_keeps_the_largest_weights():
  w = np.random.default_rng(0).normal(size=(20, 30)).astype(np.float32)
  masks = masks_lib.compute_masks({"d": {"kernel": w}}, keep_ratio=0.25)
  m = masks["d"]["kernel"]
  assert m.sum() == 150
  assert np.abs(w[m]).min() >= np.abs(w[~m]).max()


def test_global_magnitude_ranks_across_layers():
  small = np.full((10, 10), 0.1, np.float32)
  large = np.full((10, 10), 5.0, np.float32)
  masks = masks_lib.compute_masks({"a": {"kernel": small}, "b": {"kernel": large}},
                                  keep_ratio=0.5, scope="global")
  # b wins every global rank; a keeps only its one best weight (never emptied).
  assert masks["b"]["kernel"].all() and masks["a"]["kernel"].sum() == 1


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
@pytest.mark.parametrize("scope,structure", [("layer", "unstructured"), ("global", "unstructured"),
                                             ("layer", "filter"), ("layer", "n:m")])
def test_no_tiny_layer_is_emptied(criterion, scope, structure):
  # A (2, 2) kernel at keep 0.1 would keep round(0.4) = 0 weights; tfmot and jaxpruner keep one.
  rng = np.random.default_rng(0)
  params = {"big": {"kernel": rng.normal(size=(40, 50)).astype(np.float32)},
            "tiny": {"kernel": rng.normal(size=(2, 2)).astype(np.float32) * 1e-3}}
  masks = masks_lib.compute_masks(params, keep_ratio=0.1, criterion=criterion, scope=scope,
                                  structure=structure, n=1, m=4, key=jax.random.key(0))
  tiny = np.asarray(masks["tiny"]["kernel"])
  assert tiny.sum() >= 1
  if structure == "unstructured":  # exactly one, and the largest when ranked by magnitude
    assert tiny.sum() == 1
    if criterion == "magnitude":
      assert np.abs(params["tiny"]["kernel"])[tiny] == np.abs(params["tiny"]["kernel"]).max()
  counts = masks_lib.param_counts(params, masks)  # the count reported is the count kept
  assert counts["kept_prunable_params"] == sum(int(np.sum(m)) for m in jax.tree.leaves(masks))


def test_two_four_keeps_two_of_every_four_inputs():
  w = np.random.default_rng(1).normal(size=(3, 3, 8, 5)).astype(np.float32)
  masks = masks_lib.compute_masks({"c": {"kernel": w}}, structure="n:m", n=2, m=4)
  m = masks["c"]["kernel"]
  groups = m.reshape(3, 3, 2, 4, 5)  # input axis split into groups of 4
  np.testing.assert_array_equal(groups.sum(3), 2)
  # within each group the two kept are the two largest in magnitude
  g = np.abs(w).reshape(3, 3, 2, 4, 5)
  kept_min = np.where(groups, g, np.inf).min(3)
  dropped_max = np.where(groups, -np.inf, g).max(3)
  assert np.all(kept_min >= dropped_max)


@pytest.mark.parametrize("model,shape", [
    (models.MLP(hidden=(40, 20)), (28, 28, 1)),
    (models.LeNet5(), (28, 28, 1)),
    (models.VGG(depth=11, width=0.125), (32, 32, 3)),
])
def test_filter_masks_prune_channels_and_their_consumers(model, shape):
  params = _params(model, shape)
  order = _forward_order(model, shape)
  masks = masks_lib.compute_masks(params, keep_ratio=0.35, structure="filter", chain=order)
  flat = tree.flatten(masks)
  kernels = tree.flatten(params)
  total = sum(kernels[p].size for p in order)
  kept = sum(int(flat[p].sum()) for p in order)
  # ± one filter per layer, counted in parameters
  slack = sum(int(np.prod(kernels[p].shape[:-1])) for p in order)
  assert abs(kept - 0.35 * total) <= slack
  out_kept = {}
  for i, p in enumerate(order):
    m = flat[p]
    channel_alive = m.reshape(-1, m.shape[-1]).any(0)
    out_kept[p] = channel_alive
    if i == len(order) - 1:
      assert channel_alive.all()  # the logits are never pruned
    else:
      assert 0 < channel_alive.sum() < m.shape[-1]
    if i > 0:  # input channels of a pruned filter are gone from the consumer
      prev = out_kept[order[i - 1]]
      reps = m.shape[-2] // prev.size
      inputs_alive = m.reshape(-1, m.shape[-2], m.shape[-1]).any((0, 2))
      np.testing.assert_array_equal(inputs_alive, np.tile(prev, reps))
    # every surviving (input, output) pair is fully kept: the mask is a sub-matrix
    live = np.outer(m.reshape(-1, m.shape[-2], m.shape[-1]).any((0, 2)), channel_alive)
    np.testing.assert_array_equal(m.reshape(-1, m.shape[-2], m.shape[-1]).any(0), live)


def test_filter_masked_model_equals_the_smaller_model():
  """Cutting the pruned channels out gives the same logits: the masked model *is* the small one."""
  model = models.MLP(hidden=(12, 8), num_classes=3)
  params = _params(model, (4,))
  order = _forward_order(model, (4,))
  masks = masks_lib.compute_masks(params, keep_ratio=0.5, structure="filter", chain=order)
  masked = jax.tree.map(lambda w: w, params)
  for p, m in tree.flatten(masks).items():
    unit = p.split("/")[0]
    masked[unit]["dense"]["kernel"] = params[unit]["dense"]["kernel"] * m
  x = jax.random.normal(jax.random.key(5), (6, 4))
  keep1 = masks["fc1"]["dense"]["kernel"].any(0)
  keep2 = masks["fc2"]["dense"]["kernel"].any(0)
  relu = jax.nn.relu
  p = params
  h = relu(x @ p["fc1"]["dense"]["kernel"][:, keep1] + p["fc1"]["dense"]["bias"][keep1])
  h = relu(h @ p["fc2"]["dense"]["kernel"][keep1][:, keep2] + p["fc2"]["dense"]["bias"][keep2])
  small = h @ p["head"]["dense"]["kernel"][keep2] + p["head"]["dense"]["bias"]
  np.testing.assert_allclose(model.apply({"params": masked}, x), small, atol=1e-5)


class UserNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(8, name="encoder")(x))
    x = nn.LayerNorm(name="norm")(x)
    x = nn.relu(nn.Dense(8, name="middle")(x))
    return nn.Dense(2, name="classifier")(x)


def test_include_exclude_regexes_on_a_user_model():
  params = UserNet().init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  assert masks_lib.prunable_paths(params) == [
      "encoder/kernel", "middle/kernel", "classifier/kernel"]
  assert masks_lib.prunable_paths(params, exclude=(r"^classifier/",)) == [
      "encoder/kernel", "middle/kernel"]
  assert masks_lib.prunable_paths(params, include=(r"^middle/",)) == [
      "middle/bias", "middle/kernel"] or masks_lib.prunable_paths(
          params, include=(r"^middle/",)) == ["middle/kernel", "middle/bias"]
  masks = masks_lib.compute_masks(params, keep_ratio=0.5, exclude=(r"^classifier/",))
  assert set(tree.flatten(masks)) == {"encoder/kernel", "middle/kernel"}
  with pytest.raises(ValueError, match="no parameter matches"):
    masks_lib.compute_masks(params, include=(r"nothing_here",))


def test_param_counts():
  params = {"a": {"kernel": np.ones((4, 5)), "bias": np.ones(5)}}
  masks = masks_lib.compute_masks(params, keep_ratio=0.35)
  counts = masks_lib.param_counts(params, masks)
  assert counts == {"prunable_params": 20, "kept_prunable_params": 7,
                    "params_total_before": 25, "params_total_after": 12}


def test_erk_densities_by_hand():
  """Dense (4, 6) and conv (3, 3, 2, 4): Erdős–Rényi-Kernel scales (4+6)/24 and 12/72."""
  shapes = {"a": (4, 6), "b": (3, 3, 2, 4)}
  half = masks_lib.erk_densities(shapes, 0.5)  # scale 48 / (10 + 12)
  assert half == pytest.approx({"a": 480 / 528, "b": 576 / 1584})
  assert masks_lib.keep_counts(shapes, 0.5, "erk") == {"a": 22, "b": 26}
  # At 0.8 the dense kernel would pass density 1: it is kept whole, the conv gets the rest.
  assert masks_lib.erk_densities(shapes, 0.8) == pytest.approx({"a": 1.0, "b": 52.8 / 72})
  assert masks_lib.keep_counts(shapes, 0.8, "erk") == {"a": 24, "b": 53}
  rng = np.random.default_rng(0)
  params = {"a": {"kernel": rng.normal(size=(4, 6))}, "b": {"kernel": rng.normal(size=(3, 3, 2, 4))}}
  masks = masks_lib.compute_masks(params, keep_ratio=0.5, scope="erk")
  assert {k: int(v["kernel"].sum()) for k, v in masks.items()} == {"a": 22, "b": 26}


def test_lamp_scores_and_masks_by_hand():
  """LAMP: w² over the sum of w² of itself and every larger weight of its kernel."""
  np.testing.assert_allclose(masks_lib.lamp_scores(np.array([1.0, 2.0, 3.0])),
                             [1 / 14, 4 / 13, 1.0])
  a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[10.0, 9.0, 8.0, 0.5]])
  np.testing.assert_allclose(masks_lib.lamp_scores(b[0]), [1.0, 81 / 181, 64 / 245, 0.25 / 245.25])
  params = {"a": {"kernel": a}, "b": {"kernel": b}}
  lamp = masks_lib.compute_masks(params, keep_ratio=3 / 7, scope="lamp")
  # Scores 1 (b's 10), 1 (a's 3), then b's 9 (81/181 > a's 4/13): a keeps its largest weight
  # by rank, not by the floor that a global magnitude ranking needs (10, 9, 8 from b).
  assert lamp["a"]["kernel"].tolist() == [[False, False, True]]
  assert lamp["b"]["kernel"].tolist() == [[True, True, False, False]]
  magnitude = masks_lib.compute_masks(params, keep_ratio=3 / 7, scope="global")
  assert magnitude["b"]["kernel"].tolist() == [[True, True, True, False]]
  with pytest.raises(ValueError, match="criterion"):
    masks_lib.compute_masks(params, keep_ratio=0.5, scope="lamp", criterion="random",
                            key=jax.random.key(0))


def test_wanda_scores_weights_by_their_inputs_norms_and_compares_within_each_output():
  """Scores |W|·‖X‖: column 0 is [1·10, 2·1, 3·2] = [10, 2, 6], column 1 [4·10, 1, 0.5·2];
  each output keeps round(0.34·3) = 1 input, its best: input 0 for both, although by
  magnitude alone column 0 would keep input 2 (|−3|)."""
  w = np.array([[1.0, -4.0], [2.0, 1.0], [-3.0, 0.5]])
  norms = {"d/kernel": np.array([10.0, 1.0, 2.0])}
  wanda = masks_lib.compute_masks({"d": {"kernel": w}}, keep_ratio=0.34, criterion="wanda",
                                  norms=norms)["d"]["kernel"]
  assert wanda.tolist() == [[True, True], [False, False], [False, False]]
  magnitude = masks_lib.compute_masks({"d": {"kernel": w}}, keep_ratio=0.34)["d"]["kernel"]
  assert magnitude[2, 0] and not magnitude[0, 0]
  # A DenseGeneral kernel [2 inputs, 2 heads, 2]: its norms are per input, outputs are (2, 2).
  general = np.arange(1.0, 9.0).reshape(2, 2, 2)
  got = masks_lib.compute_masks({"q": {"kernel": general}}, keep_ratio=0.5, criterion="wanda",
                                norms={"q/kernel": np.array([100.0, 1.0])},
                                axes={"q/kernel": (0,)})["q"]["kernel"]
  assert got[0].all() and not got[1].any()  # every output keeps the input of norm 100


def test_n_m_groups_run_along_a_dense_general_kernels_contracting_axes():
  # query-like kernel [8 inputs, 2 heads, 3]: groups of 4 along the 8 inputs, per output
  w = np.random.default_rng(0).normal(size=(8, 2, 3))
  got = masks_lib.compute_masks({"q": {"kernel": w}}, structure="n:m", n=2, m=4,
                                axes={"q/kernel": (0,)})["q"]["kernel"]
  np.testing.assert_array_equal(got.reshape(2, 4, 2, 3).sum(1), 2)
  for h in range(2):
    for d in range(3):
      for g in range(2):
        column = np.abs(w[4 * g:4 * g + 4, h, d])
        assert set(np.flatnonzero(got[4 * g:4 * g + 4, h, d])) == set(np.argsort(-column)[:2])


def test_round_to_keeps_channel_counts_a_device_likes_and_reports_what_it_kept():
  model = models.VGG(depth=11, width=0.25)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  for multiple in (1, 8):
    masks = masks_lib.compute_masks(params, keep_ratio=0.35, structure="filter",
                                    groups=model.channel_groups(), round_to=multiple)
    kept = [int(np.asarray(m).reshape(-1, np.shape(m)[-1]).any(0).sum())
            for p, m in tree.flatten(masks).items() if p != "head/dense/kernel"]
    widths = [np.shape(m)[-1] for p, m in tree.flatten(masks).items() if p != "head/dense/kernel"]
    if multiple == 8:
      assert all(k % 8 == 0 or k == w for k, w in zip(kept, widths)), kept
    counts = masks_lib.param_counts(params, masks)
    measured = counts["kept_prunable_params"] / counts["prunable_params"]
    assert abs(measured - 0.35) < (0.02 if multiple == 1 else 0.12)
  assert masks_lib.rounded(5.4, 64, 8) == 8 and masks_lib.rounded(13, 64, 8) == 16
  assert masks_lib.rounded(0.2, 4, 8) == 4  # never more than there are
