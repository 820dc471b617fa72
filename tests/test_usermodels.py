"""User models by import path: Linen and NNX behind init/apply, their own teachers, compare."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from alphaprune import checkpoint, compare, export, masks as masks_lib, models, train, tree
from alphaprune import preflight, usermodels
from cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = os.path.join(REPO, "tests", "user_models.py")
sys.path.insert(0, os.path.join(REPO, "configs"))
import fashion_mnist  # noqa: E402


@pytest.mark.parametrize("name", ["LinenNet", "NNXNet"])
def test_a_user_model_behaves_like_a_builtin_through_init_and_apply(name):
  model = models.make_model({"name": f"{USER}:{name}", "kwargs": {"hidden": 8}}, 3)
  assert hash(model) == hash(models.make_model({"name": f"{USER}:{name}", "kwargs": {"hidden": 8}}, 3))
  x = jax.random.normal(jax.random.key(0), (16, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  assert set(variables) == {"params", "batch_stats"}
  assert [k.shape for p, k in tree.flatten(variables["params"]).items() if p.endswith("kernel")] \
      == [(784, 8), (8, 3)]
  evaluate = jax.jit(lambda v: model.apply(v, x))
  np.testing.assert_array_equal(evaluate(variables), evaluate(variables))  # eval: no dropout
  train_mode = jax.jit(lambda v, k: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": k}))
  a, stats = train_mode(variables, jax.random.key(2))
  b, _ = train_mode(variables, jax.random.key(2))
  c, _ = train_mode(variables, jax.random.key(3))
  np.testing.assert_array_equal(a, b)  # dropout comes from the key alone
  assert not np.array_equal(a, c)
  moved = [not np.allclose(s, s0) for s, s0 in zip(jax.tree.leaves(stats["batch_stats"]),
                                                    jax.tree.leaves(variables["batch_stats"]))]
  assert all(moved)  # running statistics are updated in training


def test_an_unloadable_model_is_a_one_line_error():
  for spec, needle in ((f"{USER}:Missing", "AttributeError"), ("no_such_pkg.mod:Net", "No module"),
                       ("json:JSONDecoder", "not a Flax")):
    with pytest.raises(usermodels.UserModelError) as e:
      usermodels.load_class(spec)
    assert needle in str(e.value) and "\n" not in str(e.value)


def _train_own_teacher(path, hidden=32):
  """A user's own loop: plain optax on the Linen model, then an orbax save of its variables."""
  model = usermodels.load_class(f"{USER}:LinenNet")(num_classes=10, hidden=hidden)
  x = jax.random.normal(jax.random.key(0), (64, 28, 28, 1))
  y = jax.random.randint(jax.random.key(1), (64,), 0, 10)
  variables = model.init({"params": jax.random.key(2), "dropout": jax.random.key(3)}, x)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  for i in range(5):
    def loss(p):
      logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"], rngs={"dropout": jax.random.key(i)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (_, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    params, stats = optax.apply_updates(params, updates), new["batch_stats"]
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(str(path), {"params": params, "batch_stats": stats})
  return params, stats


def _config(tmp_path, **extra):
  c = fashion_mnist.get_config("smoke")
  c.update_from_flattened_dict({"data.data_dir": str(tmp_path / "tfds"), "data.prepare": True, "data.manual_dir": "",
                                "model.name": f"{USER}:LinenNet", **extra})
  return c


def test_a_teacher_saved_by_the_users_own_code_is_pruned(tmp_path):
  params, stats = _train_own_teacher(tmp_path / "mine")
  config = _config(tmp_path, **{"teacher.checkpoint": str(tmp_path / "mine"),
                                "checkpoint.keep": 100})
  with tfds.testing.mock_data(num_examples=120):
    summary = train.run(config, str(tmp_path / "run"))
  first, _ = checkpoint.RunCheckpoints(str(tmp_path / "run" / "checkpoints" / "prune")).restore(0, None)
  # The prune phase starts from exactly the saved teacher: kernels, biases, statistics.
  saved = tree.flatten(params)
  start = {**tree.flatten(first["params"]["teacher"]), **tree.flatten(first["params"]["shared"])}
  assert set(start) == set(saved)
  for path, value in saved.items():
    np.testing.assert_array_equal(start[path], value)
  for a, b in zip(jax.tree.leaves(first["model_state"]), jax.tree.leaves(stats)):
    np.testing.assert_array_equal(a, b)
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert {json.loads(line)["phase"] for line in f} == {"prune", "finetune"}  # no pretraining
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]


def test_a_teacher_of_another_shape_exits_2_with_one_line(tmp_path, capsys):
  _train_own_teacher(tmp_path / "small", hidden=16)
  argv = ["alphaprune", f"--config={REPO}/configs/fashion_mnist.py:smoke",
          f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True",
          "--config.data.manual_dir=", f"--config.model.name={USER}:LinenNet",
          f"--config.teacher.checkpoint={tmp_path / 'small'}"]
  with tfds.testing.mock_data(num_examples=60):
    code = run_cli(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1, err
  assert f"does not fit model {USER}:LinenNet" in err[0] and ": (16,) vs (32,)" in err[0]
  assert not (tmp_path / "run").exists()


def test_compare_runs_on_a_user_nnx_model(tmp_path):
  launcher = f"{sys.executable} {os.path.join(REPO, 'tests', 'mock_main.py')}"
  code = compare.main([f"--config={REPO}/configs/fashion_mnist.py:smoke", "--seeds=0",
                       f"--workdir={tmp_path}", "--methods=alpha_blend,one_shot",
                       f"--launcher={launcher}", f"--config.model.name={USER}:NNXNet",
                       f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True", "--config.data.manual_dir="])
  seed = tmp_path / "keep_0.35" / "seed_0"
  assert code == 0, (seed / "one_shot.log").read_text()[-2000:]
  grid = json.loads((tmp_path / "compare.json").read_text())
  assert {entry["method"] for entry in grid["entries"]} == {"alpha_blend", "one_shot"}
  summaries = {m: json.loads((seed / m / "summary.json").read_text())
               for m in ("alpha_blend", "one_shot")}
  assert {s["model"] for s in summaries.values()} == {f"{USER}:NNXNet"}
  # one_shot pruned the teacher alpha_blend pretrained: the same teacher accuracy.
  assert summaries["one_shot"]["teacher_test_accuracy"] == \
      summaries["alpha_blend"]["teacher_test_accuracy"]


def test_a_bare_params_tree_is_a_teacher_too(tmp_path):
  """A model without batch statistics may be saved as its params tree alone."""
  model = models.make_model({"name": "mlp", "hidden": (8,)}, 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(str(tmp_path / "bare"), variables["params"])
  config = fashion_mnist.get_config("smoke")
  config.update_from_flattened_dict({"model.hidden": (8,), "teacher.checkpoint": str(tmp_path / "bare")})
  preflight.check_teacher(config, model, (28, 28, 1))  # shapes agree: no error
  loaded, _ = checkpoint.load_model(str(tmp_path / "bare"), jax.tree.map(np.zeros_like, variables))
  assert set(loaded) == {"params"}
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_filter_masks_on_a_user_model_cut_output_channels_and_export_densely():
  model = models.make_model({"name": f"{USER}:NNXNet", "kwargs": {"hidden": 20}}, 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  assert model.channel_groups() is None  # no declared topology
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.35, structure="filter",
                                  groups=model.channel_groups())
  for path, m in tree.flatten(masks).items():
    columns = np.asarray(m).reshape(-1, np.shape(m)[-1])
    assert np.all(columns.all(0) | ~columns.any(0)), path  # whole output channels, kept or cut
  _, _, exported, compact = export.pruned_network(model, {}, 10, variables, masks, "filter")
  assert not compact and exported is variables  # dense, zeros inside (model.json says so)


def test_an_nnx_model_with_a_list_of_layers_has_string_paths():
  model = models.make_model({"name": f"{USER}:NNXListNet"}, 10)
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  assert masks_lib.prunable_paths(variables["params"]) == ["layers/0/kernel", "layers/1/kernel"]
  doubled = jax.tree.map(lambda w: 2 * w, variables)  # the values applied are the ones given
  h = jax.nn.relu(x.reshape(4, -1) @ doubled["params"]["layers"]["0"]["kernel"]
                  + doubled["params"]["layers"]["0"]["bias"])
  want = h @ doubled["params"]["layers"]["1"]["kernel"] + doubled["params"]["layers"]["1"]["bias"]
  np.testing.assert_allclose(jax.jit(model.apply)(doubled, x), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ models from the wild

WILD = os.path.join(REPO, "tests", "wild")
VIT_KWARGS = ("{'patches': {'size': [7, 7]}, 'transformer': {'num_layers': 1, 'mlp_dim': 32, "
              "'num_heads': 2}, 'hidden_size': 16}")


def _wild_cli(tmp_path, model, *extra, examples="60"):
  """The smoke pipeline from the command line on TFDS mock data, the model named as a user
  names it: its file and class, nothing wrapped."""
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "tests", "mock_main.py"),
       f"--config={REPO}/configs/fashion_mnist.py:smoke", f"--workdir={tmp_path / 'run'}",
       f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.prepare=True", "--config.data.manual_dir=",
       f"--config.model.name={model}", "--config.teacher.epochs=1",
       "--config.train.max_epochs_per_stage=1", "--config.train.finetune_epochs=0", *extra],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MOCK_EXAMPLES": examples})


@pytest.mark.parametrize("model,extra", [
    ("mnist_cnn.py:CNN", ()),  # no num_classes, __call__(x)
    ("mnist_nnx.py:CNN", ()),  # NNX, rngs at call time, no num_classes
    ("mnist_nnx.py:TrainArgCNN", ()),  # NNX __call__(x, train)
    ("resnet_like.py:TinyResNet", ()),  # a partial; BatchNorm(axis_name='batch')
    ("vit_like/models_vit.py:VisionTransformer", (f"--config.model.kwargs={VIT_KWARGS}",)),
])
def test_models_from_the_wild_run_unchanged(tmp_path, model, extra):
  proc = _wild_cli(tmp_path, f"{WILD}/{model}", *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  listed = re.findall(r"^  prunable (\S+) ", proc.stdout, re.M)
  assert listed and all(path.endswith("kernel") for path in listed), listed
  if "vit_like" in model:  # attention's 3-D kernels pruned; its 2-D biases, the position
    # embedding and the class token stay dense
    assert "Encoder1DBlock_0/MultiHeadDotProductAttention_0/query/kernel" in listed
    variables, _ = checkpoint.load_model(str(tmp_path / "run" / "export"))
    flat = tree.flatten(variables["params"])
    for path in ("cls", "pos_embedding",
                 "Encoder1DBlock_0/MultiHeadDotProductAttention_0/query/bias"):
      assert path in flat and path not in listed


BROKEN = [
    ("broken.py:StatsWithoutTrain", (), "updates its batch statistics when evaluating"),
    ("broken.py:TupleOutput", (), "returns a tuple, not one array of logits"),
    ("broken.py:SevenOutputs", (), "returns float32[2, 7] for a batch of 2; the dataset has 10"),
    ("broken.py:Unhashable", (), "unhashable attribute"),
    ("mnist_cnn.py:CNN", ("--config.model.kwargs={'hiden': 3}",), "model.kwargs has 'hiden'"),
    ("mnist_cnn.py:Missing", (), "Flax module classes are ['CNN']"),
]


@pytest.mark.parametrize("model,extra,needle", BROKEN, ids=[b[2][:20] for b in BROKEN])
def test_a_broken_convention_is_one_line_and_exit_2_before_anything_is_written(
    tmp_path, model, extra, needle):
  proc = _wild_cli(tmp_path, f"{WILD}/{model}", *extra)
  # (TFDS's mock data logs one absl warning of its own before the run starts.)
  lines = [line for line in proc.stderr.strip().splitlines()
           if not re.match(r"W\d{4} .*testing/metadata", line)]
  assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
  assert lines[0].startswith("error: ")
  assert not (tmp_path / "run").exists()


def test_filter_masks_on_a_user_model_keep_every_logit_column(tmp_path):
  proc = _wild_cli(tmp_path, f"{WILD}/mnist_cnn.py:CNN", "--config.prune.structure=filter")
  assert proc.returncode == 0, proc.stderr[-3000:]
  variables, _ = checkpoint.load_model(str(tmp_path / "run" / "export"))
  flat = tree.flatten(variables["params"])
  head = np.asarray(flat["Dense_1/kernel"])  # the head: its 10 columns are the classes
  assert head.shape == (32, 10) and np.all(np.any(head != 0, axis=0))
  hidden = np.asarray(flat["Dense_0/kernel"])  # an inner layer loses whole output channels
  assert 0 < int(np.sum(np.any(hidden != 0, axis=0))) < 32
