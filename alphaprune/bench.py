"""Benchmarks for DESIGN §6: `python -m alphaprune.bench --out=FILE.json [--quick]`.

Each ratio compares two figures taken in this process with the same model,
batch and optimizer, measured interleaved (A, B, then B, A, …) and summarised
by the median of the repeats. Step times come from one jitted `lax.scan` over
`steps` training steps, which is how the driver runs an epoch, so Python
dispatch does not count.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alphaprune import blending, data, devices, losses, masks as masks_lib, models, steps
from alphaprune import train, tree
from alphaprune import optimizer as opt_lib

CLS = losses.Loss("classification")
REG = losses.Loss("regression")


def _timeit(fn, *args):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def interleaved_samples(fns: dict, repeats: int) -> dict:
  """Seconds of each zero-argument callable, measured in turn `repeats` times: one list
  per name, entry r from round r.

  The order rotates every round (A B C, B C A, C A B, …): on this 2-core machine a
  program runs 2–4% slower right after a different one than after itself (measured with
  three copies of one program), so a fixed order would charge that to whichever comes
  second."""
  for fn in fns.values():  # compile and warm up
    fn()
  names = list(fns)
  times = {name: [] for name in fns}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      times[name].append(_timeit(fns[name]))
  return times


def medians(samples: dict) -> dict:
  return {name: statistics.median(t) for name, t in samples.items()}


def interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each callable (see `interleaved_samples`)."""
  return medians(interleaved_samples(fns, repeats))


def quartiles(samples: dict, num: str, den: str) -> list[float]:
  """The spread of a ratio: first and third quartiles of num ÷ den round by round (the two
  measured back to back, so slow drifts of the machine cancel)."""
  q = statistics.quantiles([a / b for a, b in zip(samples[num], samples[den])], n=4)
  return [q[0], q[2]]


def _synthetic(n, shape, classes, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 255, (n,) + shape).astype(np.uint8),
          "label": rng.integers(0, classes, n).astype(np.int32)}


def _nbytes(t) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(t)))


class Setup:
  """One model, batch and optimizer: dense, layer-blended and block-blended train states."""

  def __init__(self, model_cfg, shape, batch_size, steps, classes=10):
    self.shape, self.batch, self.steps = shape, batch_size, steps
    self.mesh = devices.make_mesh()
    self.plain = models.make_model(model_cfg, classes)
    self.block = models.make_model(model_cfg, classes, "block")
    self.arrays = devices.put_replicated(_synthetic(batch_size * steps, shape, classes), self.mesh)
    variables = self.plain.init(jax.random.key(0), jnp.zeros((1,) + shape))
    self.variables = variables
    self.masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.35)
    self.opt = opt_lib.make_optimizer(optimizer="sgd", learning_rate=1e-3)
    self.mean, self.std = (0.5,) * shape[-1], (0.25,) * shape[-1]

  def step_config(self, model, form, loss=CLS) -> steps.StepConfig:
    return steps.StepConfig(model=model, loss=loss, mean=self.mean, std=self.std,
                            mesh=self.mesh, form=form, tx=self.opt.tx, batch_size=self.batch)

  def epoch_fn(self, model, form, loss=CLS):
    """(state, arrays, aux) → (state, metrics): the driver's jitted epoch."""
    cfg = self.step_config(model, form, loss)
    return lambda state, arrays, aux: steps.train_epoch(
        state, arrays, steps.epoch_order(state, arrays, cfg), aux, cfg)

  def dense_state(self):
    """Plain dense training: every kernel trainable, nothing blended (masks all ones)."""
    v = dict(self.variables)
    params = v.pop("params")
    ones = jax.tree.map(lambda m: np.ones(m.shape, bool), self.masks)
    kernels, rest = blending.split(params, ones)
    return steps.init_state({"teacher": {}, "student": kernels, "shared": rest}, v, ones,
                            self.opt.tx, 0)

  def blended_state(self, form):
    params, model_state, masks = blending.init_params(form, jax.random.key(1), self.variables,
                                                      self.masks)
    return steps.init_state(params, model_state, masks, self.opt.tx, 0).replace(
        alpha=jnp.float32(0.5))

  def plain_dense_step(self):
    """The baseline a user writes without alphaprune: optax SGD on the model's own params."""
    tx = optax.sgd(1e-3, momentum=0.9)
    model, mean, std, batch = self.plain, self.mean, self.std, self.batch
    collections = [k for k in self.variables if k != "params"]

    def epoch(carry, arrays):
      def body(carry, i):
        params, extra, opt_state = carry
        b = jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, i * batch, batch), arrays)
        x = data.normalise(b["image"], mean, std)

        def loss(p):
          if collections:
            logits, new = model.apply({"params": p, **extra}, x, train=True, mutable=collections)
          else:
            logits, new = model.apply({"params": p}, x, train=True), {}
          return optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).mean(), new
        (l, new), g = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), {**extra, **new}, opt_state), l
      return jax.lax.scan(body, carry, jnp.arange(self.steps))

    v = jax.tree.map(jnp.array, dict(self.variables))  # own copies: the carry is donated
    params = v.pop("params")
    return jax.jit(epoch, donate_argnums=0), (params, v, tx.init(params))


def step_ratios(setup: Setup, repeats: int) -> dict:
  """Layer- and block-form blend steps ÷ the plain dense step, and the driver's own dense
  step (its optimizer chain, shuffled batches, masks of ones) ÷ the same: what the driver
  costs apart from the blend (`driver_dense_step_ratio`)."""
  dense_fn, dense_carry = setup.plain_dense_step()
  layer_fn, block_fn = setup.epoch_fn(setup.plain, "layer"), setup.epoch_fn(setup.block, "block")
  holders = {"dense": dense_carry, "layer": setup.blended_state("layer"),
             "block": setup.blended_state("block"), "driver_dense": setup.dense_state()}

  def run(name, fn):
    def go():
      out = fn(holders[name], setup.arrays) if name == "dense" else fn(holders[name], setup.arrays, {})
      holders[name] = out[0]
      return out[1]
    return go

  samples = interleaved_samples({"dense": run("dense", dense_fn), "layer": run("layer", layer_fn),
                                 "block": run("block", block_fn),
                                 "driver_dense": run("driver_dense", layer_fn)}, repeats)
  per_step = {k: v / setup.steps for k, v in medians(samples).items()}
  return {"dense_step_ms": 1e3 * per_step["dense"], "layer_step_ms": 1e3 * per_step["layer"],
          "block_step_ms": 1e3 * per_step["block"],
          "driver_dense_step_ms": 1e3 * per_step["driver_dense"],
          "blend_layer_step_ratio": per_step["layer"] / per_step["dense"],
          "blend_block_step_ratio": per_step["block"] / per_step["dense"],
          "driver_dense_step_ratio": per_step["driver_dense"] / per_step["dense"],
          **{f"{figure}_quartiles": quartiles(samples, name, "dense")
             for figure, name in (("blend_layer_step_ratio", "layer"),
                                  ("blend_block_step_ratio", "block"),
                                  ("driver_dense_step_ratio", "driver_dense"))},
          "images_per_second_dense": setup.batch / per_step["dense"],
          "images_per_second_layer": setup.batch / per_step["layer"]}


def regression_ratio(setup: Setup, repeats: int) -> dict:
  """Regression on precomputed teacher logits ÷ classification, layer form."""
  logits = jax.random.normal(jax.random.key(3), (setup.batch * setup.steps, 10))
  reg_arrays = {**setup.arrays, "teacher_logits": logits}
  cls_fn, reg_fn = setup.epoch_fn(setup.plain, "layer"), setup.epoch_fn(setup.plain, "layer", REG)
  holders = {"cls": setup.blended_state("layer"), "reg": setup.blended_state("layer")}

  def run(name, fn, arrays):
    def go():
      holders[name], m = fn(holders[name], arrays, {})
      return m
    return go
  t = interleaved({"cls": run("cls", cls_fn, setup.arrays),
                   "reg": run("reg", reg_fn, reg_arrays)}, repeats)
  return {"regression_step_ratio": t["reg"] / t["cls"]}


def input_overhead(setup: Setup, repeats: int, epoch_steps: int) -> dict:
  """A real epoch (the host's permutation, then on-device gather + steps and the host sync)
  ÷ (steps × the bare step time).

  The bare step is the same jitted step on batches already in place: the same arrays, read
  in their stored order by a slice, so only shuffling (permutation, gather) is left to count.
  `input_overhead_ratio_fixed_batch` is the older bare step on one fixed batch: XLA hoists
  that batch's normalisation out of the loop (it is the same every step), so that step does
  less than a real one and the ratio counts the normalisation as input overhead too."""
  n = setup.batch * epoch_steps
  arrays = devices.put_replicated(_synthetic(n, setup.shape, 10, seed=1), setup.mesh)
  epoch_fn = setup.epoch_fn(setup.plain, "layer")
  cfg = setup.step_config(setup.plain, "layer")
  fixed = jax.tree.map(lambda v: v[:setup.batch], arrays)

  @functools.partial(jax.jit, donate_argnums=0)
  def in_place(state, arrays):
    def body(state, i):
      batch = {k: jax.lax.dynamic_slice_in_dim(v, i * setup.batch, setup.batch)
               for k, v in arrays.items()}
      return steps.train_step(state, batch, {}, cfg)
    return jax.lax.scan(body, state, jnp.arange(epoch_steps))

  @functools.partial(jax.jit, donate_argnums=0)
  def one_batch(state, batch):
    return jax.lax.scan(lambda s, _: steps.train_step(s, batch, {}, cfg), state, None,
                        length=epoch_steps)

  holders = {name: setup.blended_state("layer") for name in ("epoch", "bare", "fixed")}

  def run_epoch():
    holders["epoch"], m = epoch_fn(holders["epoch"], arrays, {})
    return float(m["loss"])  # the driver reads the metrics on the host after every epoch

  def run(name, fn, *args):
    def go():
      holders[name], m = fn(holders[name], *args)
      return m
    return go

  fns = {"epoch": run_epoch, "bare": run("bare", in_place, arrays),
         "fixed": run("fixed", one_batch, fixed)}
  for fn in fns.values():  # the first call's output placement compiles a second program
    fn()
  samples = interleaved_samples(fns, repeats)
  t = medians(samples)
  return {"input_overhead_ratio": t["epoch"] / t["bare"],
          "input_overhead_ratio_quartiles": quartiles(samples, "epoch", "bare"),
          "input_overhead_ratio_fixed_batch": t["epoch"] / t["fixed"],
          "epoch_seconds": t["epoch"], "epoch_steps": epoch_steps}


@dataclasses.dataclass(frozen=True)
class _ReadOnly:
  """Grain transform for the floor of the streamed overhead: reads step k's records from
  the ArrayRecord shards as `stream.TrainBatches` would, and returns a batch read earlier
  (no decoding, nothing else)."""

  batches: Any  # stream.TrainBatches
  batch: dict

  def __call__(self, k: int) -> dict:
    from alphaprune import stream
    stream._yield_cpu()  # as TrainBatches: the reading threads yield the CPU to training
    rows = self.batches.rows_at(k)[-1]
    data._records(self.batches.source).read([int(r) for r in rows])
    return {k: np.array(v) for k, v in self.batch.items()}


def stream_input_overhead(workdir: str, repeats: int, workers=(0, 1), threads: int = 2) -> dict:
  """The streamed pipeline's input overhead on LeNet-5, real Fashion-MNIST (421 steps of
  batch 128 an epoch): a streamed epoch (Grain reads, decodes and batches on the host
  while the device trains) ÷ (steps × the bare step time: the same jitted step on one batch
  already in place), per number of Grain worker processes (0: reading threads only).

  `stream_read_only_overhead_ratio` is the floor under it: the same epoch with Grain's
  reading threads doing nothing but read each batch's records from the ArrayRecord shards
  (no decoding, no worker processes)."""
  import grain
  from alphaprune import stream
  source = data.open_source("fashion_mnist", data_dir=os.path.join(workdir, "tfds"),
                            manual_dir=data.DEBIAN_FASHION_MNIST)
  lenet = Setup({"name": "lenet5"}, (28, 28, 1), 128, 1)
  cfg = lenet.step_config(lenet.plain, "layer")
  feeds = {f"workers{w}": stream.Feed(source, 128, 1000, 0, lenet.mesh, workers=w,
                                      threads=threads, prefetch=4) for w in workers}
  feed = feeds[f"workers{workers[0]}"]
  n = feed.steps_per_epoch
  local = {k: np.array(v) for k, v in next(feed.train_iterator(stream=2, epochs=1)).items()}
  fixed = feed.to_global(local)
  iterators = {name: f.train_iterator(stream=1, epochs=repeats + 1) for name, f in feeds.items()}
  reads = _ReadOnly(stream.TrainBatches(
      source.data_source("train"), source.rows["train"], 128, 0, 1, source.augment,
      source.image_shape), local)
  iterators["read_only"] = iter(feed._read_ahead(
      grain.MapDataset.range(n * (repeats + 1)).map(reads)))
  holders = {name: lenet.blended_state("layer") for name in ["bare", *iterators]}
  zeros = jax.tree.map(np.asarray, steps.zero_sums(holders["bare"], fixed, {}, cfg))

  def loop(name, next_batch):
    def go():
      state, sums = holders[name], devices.put_replicated(zeros, lenet.mesh)
      for _ in range(n):
        state, sums = steps.train_batch(state, sums, next_batch(), {}, cfg)
      holders[name] = state
      return float(sums["loss"])  # the driver reads the metrics after every epoch
    return go

  t = interleaved({"bare": loop("bare", lambda: fixed),
                   **{name: loop(name, lambda it=it: feed.to_global(next(it)))
                      for name, it in iterators.items()}}, repeats)
  out = {"stream_bare_epoch_seconds": t["bare"], "stream_epoch_steps": n,
         "stream_read_only_overhead_ratio": t["read_only"] / t["bare"]}
  for w in workers:
    out[f"stream_input_overhead_ratio_workers{w}"] = t[f"workers{w}"] / t["bare"]
    out[f"stream_epoch_seconds_workers{w}"] = t[f"workers{w}"]
  out["stream_input_overhead_ratio"] = min(out[f"stream_input_overhead_ratio_workers{w}"]
                                           for w in workers)
  return out


def _fresh(workdir: str, name: str) -> str:
  """A new run folder under the scratch `workdir`: a bench run reusing `--workdir` must not
  resume (and report) the runs of an earlier one."""
  import tempfile
  os.makedirs(workdir, exist_ok=True)
  return tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)


def compilations(workdir: str) -> dict:
  """Compilations of the training epoch over a real 3-stage run (mock data)."""
  import tensorflow_datasets as tfds
  from alphaprune.config import base_config
  c = base_config()
  c.data.update(name="mnist", data_dir=os.path.join(workdir, "tfds"), batch_size=32,
                eval_batch_size=50, val_fraction=0.2)
  c.model.update(name="mlp", hidden=(32, 16))
  c.teacher.epochs = 1
  c.schedule.update(kind="explicit", alphas=(0.6, 0.3, 0.0))
  c.train.max_epochs_per_stage = 2
  c.report.enabled = False
  with tfds.testing.mock_data(num_examples=100):
    summary = train.run(c, _fresh(workdir, "run"))
  return {"train_step_compilations": summary["train_epoch_compilations"],
          "compilation_run_stages": len(summary["alphas"])}


def memory(setup: Setup) -> dict:
  """Bytes of what training holds: α-blending vs plain training of the same model."""
  dense = setup.dense_state()
  blended = setup.blended_state("layer")
  plain_params = setup.variables["params"]
  plain_opt = optax.sgd(1e-3, momentum=0.9).init(plain_params)
  return {
      "plain_params_bytes": _nbytes(plain_params), "plain_opt_state_bytes": _nbytes(plain_opt),
      "blend_teacher_bytes": _nbytes(blended.params["teacher"]),
      "blend_student_bytes": _nbytes(blended.params["student"]),
      "blend_shared_bytes": _nbytes(blended.params["shared"]),
      "blend_masks_bytes": _nbytes(blended.masks),
      "blend_opt_state_bytes": _nbytes(blended.opt_state),
      "blend_total_bytes": _nbytes((blended.params, blended.masks, blended.opt_state)),
      "plain_total_bytes": _nbytes((plain_params, plain_opt)),
      "dense_driver_total_bytes": _nbytes((dense.params, dense.masks, dense.opt_state)),
  }


def compact_speedups(model_cfg, shape, repeats, batches=(1, 32, 256), iters=20) -> dict:
  """Dense ÷ compact forward time (eval mode) of a 65%-filter-pruned model, per batch size."""
  from alphaprune import compact
  dense = models.make_model(model_cfg, 10)
  variables = dense.init(jax.random.key(0), jnp.zeros((1,) + shape))
  masks = masks_lib.compute_masks(variables["params"], keep_ratio=0.35, structure="filter",
                                  groups=dense.channel_groups())
  fields, small = compact.compact_variables(dense, variables, masks)
  small = jax.device_put(small)  # on the device like the dense model's, not copied per call
  small_model = models.make_model({**model_cfg, **fields}, 10)
  out = {"compact_params": tree.count(small["params"]),
         "dense_params": tree.count(variables["params"]), "compact_fields": fields}
  fwd_dense = jax.jit(lambda v, x: dense.apply(v, x))
  fwd_small = jax.jit(lambda v, x: small_model.apply(v, x))
  for b in batches:
    x = jax.random.normal(jax.random.key(b), (b,) + shape)

    def loop(fn, v):
      def go():
        for _ in range(iters):
          y = fn(v, x)
        return y
      return go
    t = interleaved({"dense": loop(fwd_dense, variables), "compact": loop(fwd_small, small)},
                    repeats)
    out[f"compact_speedup_b{b}"] = t["dense"] / t["compact"]
    out[f"dense_forward_ms_b{b}"] = 1e3 * t["dense"] / iters
  return out


def _driver_epochs(workdir: str, model: str, epochs: int, data_dir: str) -> dict:
  """The real driver on real Fashion-MNIST: `epochs` epochs of dense pretraining, then two
  α-stages (0.5, then 0) of `epochs` / 2 epochs each (α is a value in the state, so every
  prune epoch runs the same compiled step); Adam 1e-3, batch 128. Each phase's epoch
  seconds as `metrics.jsonl` records them (training, validation, the plateau update)."""
  from alphaprune.config import base_config
  c = base_config()
  c.data.update(name="fashion_mnist", data_dir=data_dir, batch_size=128)
  c.model.update(name=model, hidden=(300, 100))
  c.teacher.update(epochs=epochs, optimizer="adam", learning_rate=1e-3)
  c.train.update(optimizer="adam", learning_rate=1e-3, max_epochs_per_stage=epochs // 2)
  c.schedule.update(kind="explicit", alphas=(0.5, 0.0))
  c.report.enabled = False
  train.run(c, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {phase: [r["seconds"] for r in records if r.get("phase") == phase]
          for phase in ("pretrain", "prune")}


def keras_epoch_ratios(workdir: str, epochs: int = 6, rounds: int = 2) -> dict:
  """Epoch time of alphaprune ÷ Keras for the same job on real Fashion-MNIST (54,000 train,
  6,000 validation images), per model: `keras_epoch_ratio_<model>`, the α-blend prune stage
  against two-branch blended Keras layers, and `keras_dense_epoch_ratio_<model>`, dense
  pretraining against the plain Keras model. Under 1: alphaprune is faster.

  The three take turns, `rounds` times (ours, Keras plain, Keras two-branch, then again): a
  run takes minutes and this machine drifts within one, so back-to-back blocks would charge
  the drift to whichever came later. Each figure is the median over all rounds of the
  epochs after each run's first (which compiles or builds the graph)."""
  from alphaprune import keras_peer
  data_dir = os.path.join(workdir, "tfds")
  ds = data.load("fashion_mnist", data_dir=data_dir, manual_dir=data.DEBIAN_FASHION_MNIST)
  train_xy, val_xy = ((np.asarray(data.normalise(s["image"], ds.mean, ds.std)), s["label"])
                      for s in (ds.train, ds.val))
  out = {}
  for model in ("mlp", "lenet5"):
    runs: dict = {"pretrain": [], "prune": [], "keras_plain": [], "keras_two_branch": []}
    accuracy: dict = {"keras_plain": [], "keras_two_branch": []}
    for r in range(rounds):
      ours = _driver_epochs(_fresh(workdir, f"keras_{model}_{r}"), model, epochs, data_dir)
      for phase in ("pretrain", "prune"):
        runs[phase].append(ours[phase])
      for name, blended in (("plain", False), ("two_branch", True)):
        fit = keras_peer.epoch_seconds(keras_peer.build(model, blended), train_xy, val_xy,
                                       epochs)
        runs[f"keras_{name}"].append(fit["epoch_seconds"])
        accuracy[f"keras_{name}"].append(fit["val_accuracy"])
    median = {k: statistics.median([s for run in v for s in run[1:]]) for k, v in runs.items()}
    out[f"keras_{model}"] = {"alphaprune_pretrain_epoch_seconds": runs["pretrain"],
                             "alphaprune_prune_epoch_seconds": runs["prune"],
                             "keras_plain_epoch_seconds": runs["keras_plain"],
                             "keras_two_branch_epoch_seconds": runs["keras_two_branch"],
                             "median_epoch_seconds": median,
                             "keras_val_accuracy": accuracy}
    out[f"keras_epoch_ratio_{model}"] = median["prune"] / median["keras_two_branch"]
    out[f"keras_dense_epoch_ratio_{model}"] = median["pretrain"] / median["keras_plain"]
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description="alphaprune benchmarks (DESIGN §6)")
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--quick", action="store_true", help="a smaller, faster measurement")
  parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
  args = parser.parse_args(argv)
  import tempfile
  workdir = args.workdir or tempfile.mkdtemp(prefix="alphaprune-bench-")
  repeats = 3 if args.quick else 9
  # The step figures' epochs take 0.1-0.3 s: many rounds are cheap, and this machine's
  # noise (±10% between runs) needs them.
  step_repeats = 3 if args.quick else 31
  steps = 20 if args.quick else 100
  t0 = time.time()
  results: dict = {"quick": args.quick, "repeats": repeats, "step_repeats": step_repeats,
                   "devices": str(jax.devices()), "platform": platform.platform(),
                   "jax": jax.__version__}
  mlp = Setup({"name": "mlp", "hidden": (300, 100)}, (28, 28, 1), 128, steps)
  results["model"] = "mlp (LeNet-300-100), 28x28x1, batch 128, SGD momentum 0.9"
  results.update(step_ratios(mlp, step_repeats))
  results.update(regression_ratio(mlp, step_repeats))
  results.update(input_overhead(mlp, step_repeats, epoch_steps=steps * 2))
  results["memory"] = memory(mlp)
  if not args.quick:  # the conv model of the original experiments, and the Keras peer
    lenet = Setup({"name": "lenet5"}, (28, 28, 1), 128, 20)
    results["lenet5"] = step_ratios(lenet, 11)
    for key in ("blend_layer_step_ratio", "blend_layer_step_ratio_quartiles"):
      results[f"lenet5_{key}"] = results["lenet5"][key]
    results.update(keras_epoch_ratios(workdir))
    results.update(stream_input_overhead(workdir, 5))
  vgg = compact_speedups({"name": "vgg", "depth": 11, "width": 0.25}, (32, 32, 3),
                         repeats, iters=5 if args.quick else 20)
  results["compact_model"] = "vgg-11 (width 0.25), 32x32x3, filter masks keeping 35% of weights"
  results.update({k: v for k, v in vgg.items() if k.startswith("compact_speedup")})
  results["compact_vgg"] = vgg
  if not args.quick:
    results["compact_mlp"] = compact_speedups({"name": "mlp", "hidden": (300, 100)},
                                              (28, 28, 1), repeats)
  results.update(compilations(workdir))
  results["bench_seconds"] = time.time() - t0
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  keys = ("blend_layer_step_ratio", "blend_block_step_ratio", "driver_dense_step_ratio",
          "train_step_compilations",
          "input_overhead_ratio", "input_overhead_ratio_fixed_batch",
          "stream_input_overhead_ratio_workers0",
          "stream_input_overhead_ratio_workers1", "stream_read_only_overhead_ratio",
          "regression_step_ratio", "compact_speedup_b1",
          "compact_speedup_b32", "compact_speedup_b256", "lenet5_blend_layer_step_ratio",
          "keras_epoch_ratio_mlp", "keras_epoch_ratio_lenet5", "keras_dense_epoch_ratio_mlp",
          "keras_dense_epoch_ratio_lenet5")
  for k in (k for k in keys if k in results):
    line = f"{k}: {results[k]:.3f}" if isinstance(results[k], float) else f"{k}: {results[k]}"
    if f"{k}_quartiles" in results:  # the middle half of the round-by-round ratios
      line += " (quartiles {:.3f}-{:.3f})".format(*results[f"{k}_quartiles"])
    print(line)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
