"""The input figures: what feeding the step costs on either pipeline, the streamed
pipeline's rate with no training at all, and the compilations of a whole run."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from alphaprune import devices, steps, train
from alphaprune.bench.timing import fresh, interleaved, interleaved_samples, medians, quartiles
from alphaprune.bench.training import Setup, synthetic
from alphaprune.data import prepare, records, source as source_lib, stream


def input_overhead(setup: Setup, repeats: int, epoch_steps: int) -> dict:
  """A real epoch (the host's permutation, then on-device gather + steps and the host sync)
  ÷ (steps × the bare step time).

  The bare step is the same jitted step on batches already in place: the same arrays, read
  in their stored order by a slice, so only shuffling (permutation, gather) is left to count.
  `input_overhead_ratio_fixed_batch` is the older bare step on one fixed batch: XLA hoists
  that batch's normalisation out of the loop (it is the same every step), so that step does
  less than a real one and the ratio counts the normalisation as input overhead too."""
  arrays = devices.put_replicated(synthetic(setup.batch * epoch_steps, setup.shape, 10, seed=1),
                                  setup.mesh)
  epoch_fn = setup.epoch_fn(setup.plain, "layer")
  cfg = setup.step_config(setup.plain, "layer")
  fixed = jax.tree.map(lambda v: v[:setup.batch], arrays)

  @functools.partial(jax.jit, donate_argnums=0)
  def in_place(state, arrays):
    def body(state, i):
      batch = {key: jax.lax.dynamic_slice_in_dim(value, i * setup.batch, setup.batch)
               for key, value in arrays.items()}
      return steps.train_step(state, batch, {}, cfg)
    return jax.lax.scan(body, state, jnp.arange(epoch_steps))

  @functools.partial(jax.jit, donate_argnums=0)
  def one_batch(state, batch):
    return jax.lax.scan(lambda s, _: steps.train_step(s, batch, {}, cfg), state, None,
                        length=epoch_steps)

  holders = {name: setup.blended_state("layer") for name in ("epoch", "bare", "fixed")}

  def run_epoch():
    holders["epoch"], metrics = epoch_fn(holders["epoch"], arrays, {})
    return float(metrics["loss"])  # the driver reads the metrics on the host every epoch

  def run(name, fn, *args):
    def go():
      holders[name], metrics = fn(holders[name], *args)
      return metrics
    return go

  fns = {"epoch": run_epoch, "bare": run("bare", in_place, arrays),
         "fixed": run("fixed", one_batch, fixed)}
  for fn in fns.values():  # the first call's output placement compiles a second program
    fn()
  samples = interleaved_samples(fns, repeats)
  seconds = medians(samples)
  return {"input_overhead_ratio": seconds["epoch"] / seconds["bare"],
          "input_overhead_ratio_quartiles": quartiles(samples, "epoch", "bare"),
          "input_overhead_ratio_fixed_batch": seconds["epoch"] / seconds["fixed"],
          "epoch_seconds": seconds["epoch"], "epoch_steps": epoch_steps}


@dataclasses.dataclass(frozen=True)
class ReadOnly:
  """Grain transform for the floor of the streamed overhead: reads step k's records from
  the ArrayRecord shards as `stream.TrainBatches` would, and returns a batch read earlier
  (no decoding, nothing else)."""

  batches: stream.TrainBatches
  batch: dict

  def __call__(self, k: int) -> dict:
    stream.yield_cpu()  # as TrainBatches: the reading threads yield the CPU to training
    records.read_records(self.batches.source, self.batches.rows_at(k)[-1])
    return {key: np.array(value) for key, value in self.batch.items()}


def fashion_mnist(workdir: str):
  """Real Fashion-MNIST's source (prepared under `workdir` from Debian's IDX files the
  first time, which needs TensorFlow)."""
  return source_lib.open_source("fashion_mnist", data_dir=os.path.join(workdir, "tfds"),
                                manual_dir=prepare.DEBIAN_FASHION_MNIST)


def _bare_steps(holders: dict, name: str, batch, count: int, cfg: steps.StepConfig):
  """A zero-argument callable: `count` jitted steps on one batch already in place, from and
  back into `holders[name]`, the metrics summed on the device and read once at the end (as
  the driver reads them after every epoch)."""
  zeros = jax.tree.map(np.asarray, steps.zero_sums(holders[name], batch, {}, cfg))

  def go():
    state, sums = holders[name], devices.put_replicated(zeros, cfg.mesh)
    for _ in range(count):
      state, sums = steps.train_batch(state, sums, batch, {}, cfg)
    holders[name] = state
    return float(sums["loss"])
  return go


def stream_input_overhead(workdir: str, repeats: int, workers=(0, 1), threads: int = 2) -> dict:
  """The streamed pipeline's input overhead on LeNet-5, real Fashion-MNIST (421 steps of
  batch 128 an epoch): a streamed epoch as the driver runs it (`StreamPhase.train_epoch`:
  Grain reads, decodes and batches on the host, each batch placed on the device two steps
  ahead, the metrics summed on the device) ÷ (steps × the bare step time: the same jitted
  step on one batch already in place), per number of Grain worker processes (0: reading
  threads only).

  `stream_read_only_overhead_ratio` is the floor under it: the same epoch with Grain's
  reading threads doing nothing but read each batch's records from the ArrayRecord shards
  (no decoding, no worker processes)."""
  source = fashion_mnist(workdir)
  lenet = Setup({"name": "lenet5"}, (28, 28, 1), 128, 1)
  cfg = lenet.step_config(lenet.plain, "layer")
  pipelines = {f"workers{count}": stream.StreamPipeline(source, 128, 1000, 0, lenet.mesh,
                                                        workers=count, threads=threads)
               for count in workers}
  first = pipelines[f"workers{workers[0]}"]
  per_epoch = first.steps_per_epoch
  local = {key: np.array(value) for key, value in next(first.train_iterator(2, 1)).items()}
  fixed = first.to_global(local)
  phases = {name: stream.StreamPhase(pipeline, stream.Consumed(
                pipeline.train_iterator(1, repeats + 1)), {})
            for name, pipeline in pipelines.items()}
  reads = ReadOnly(first.train_batches(1), local)
  phases["read_only"] = stream.StreamPhase(first, stream.Consumed(
      first.read_ahead_steps(reads, per_epoch * (repeats + 1))), {})
  holders = {name: lenet.blended_state("layer") for name in ["bare", *phases]}
  bare = _bare_steps(holders, "bare", fixed, per_epoch, cfg)

  def streamed(name):
    def go():
      holders[name], metrics = phases[name].train_epoch(holders[name], cfg)
      return float(metrics["loss"])
    return go

  seconds = interleaved({"bare": bare, **{name: streamed(name) for name in phases}}, repeats)
  for phase in phases.values():  # Grain's worker processes and their shared memory
    phase.close()
  out = {"stream_bare_epoch_seconds": seconds["bare"], "stream_epoch_steps": per_epoch,
         "stream_read_only_overhead_ratio": seconds["read_only"] / seconds["bare"]}
  for count in workers:
    out[f"stream_input_overhead_ratio_workers{count}"] = seconds[f"workers{count}"] / seconds["bare"]
    out[f"stream_epoch_seconds_workers{count}"] = seconds[f"workers{count}"]
  out["stream_input_overhead_ratio"] = min(out[f"stream_input_overhead_ratio_workers{count}"]
                                           for count in workers)
  out.update(stream_data_rate(source, lenet, per_epoch, workers, threads))
  return out


def stream_data_rate(source, setup: Setup, count: int, workers=(0, 1), threads: int = 2,
                     batch: int = 128) -> dict:
  """Batches per second the streamed pipeline delivers onto the device with no training at
  all (read, decode, augment, batch, place), per number of Grain worker processes, next to
  the rate of the bare step it must feed (`setup`'s, on one batch in place):
  `stream_data_to_step_rate` above 1 means the input can keep that step fed."""
  cfg = setup.step_config(setup.plain, "layer")
  out = {}
  for workers_count in workers:
    pipeline = stream.StreamPipeline(source, batch, 1000, 0, setup.mesh, workers=workers_count,
                                     threads=threads)
    phase = stream.StreamPhase(pipeline, stream.Consumed(pipeline.train_iterator(3, 2)), {})
    delivered = phase.placed_ahead(2 * pipeline.steps_per_epoch)
    jax.block_until_ready(next(delivered))  # Grain's threads and workers started
    t0 = time.perf_counter()
    for _ in range(count):
      last = next(delivered)
    jax.block_until_ready(last)
    out[f"stream_data_batches_per_second_workers{workers_count}"] = count / (
        time.perf_counter() - t0)
    phase.close()
  # The step it must feed: one batch in place, as in the overhead's bare epoch.
  placed = devices.put_replicated(synthetic(batch, setup.shape, 10), setup.mesh)
  steps_only = _bare_steps({"state": setup.blended_state("layer")}, "state", placed, count, cfg)
  seconds = interleaved({"steps": steps_only}, 3)["steps"]
  out["stream_step_batches_per_second"] = count / seconds
  out["stream_data_batches_per_second"] = max(out[f"stream_data_batches_per_second_workers{w}"]
                                              for w in workers)
  out["stream_data_to_step_rate"] = (out["stream_data_batches_per_second"]
                                     / out["stream_step_batches_per_second"])
  return out


def compilations(workdir: str) -> dict:
  """Compilations of the training epoch over a real 3-stage run of the driver (on the
  synthetic dataset, so that no data need be prepared)."""
  from alphaprune.config import base_config
  config = base_config()
  config.data.update(name="synthetic", batch_size=32, eval_batch_size=64, val_fraction=0.2)
  config.model.update(name="mlp", hidden=(32, 16))
  config.teacher.epochs = 1
  config.schedule.update(kind="explicit", alphas=(0.6, 0.3, 0.0))
  config.train.max_epochs_per_stage = 2
  config.report.enabled = False
  summary = train.run(config, fresh(workdir, "run"))
  return {"train_step_compilations": summary["train_epoch_compilations"],
          "compilation_run_stages": len(summary["alphas"])}


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def compile_cache(workdir: str) -> dict:
  """The persistent compilation cache's saving: the same small driver run (LeNet-5 on the
  synthetic dataset) three times in fresh processes, as `compare` runs its seeds: into an
  empty cache folder, again with that folder filled, and with the cache off. The figure is
  the first epoch's seconds (which hold its compilations) and the whole process's, warm ÷ off."""
  cache = fresh(workdir, "jax-cache")
  out = {}
  for name, setting in (("cold", cache), ("warm", cache), ("off", "off")):
    run_dir = fresh(workdir, f"cache-{name}")
    env = {key: value for key, value in os.environ.items()
           if key != "JAX_COMPILATION_CACHE_DIR"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alphaprune.main", f"--workdir={run_dir}",
                    f"--config={CONFIGS}/fashion_mnist.py:smoke", "--config.data.name=synthetic",
                    "--config.data.manual_dir=", "--config.model.name=lenet5",
                    "--config.teacher.epochs=1", "--config.train.max_epochs_per_stage=1"],
                   env={**env, "ALPHAPRUNE_COMPILE_CACHE": setting}, check=True,
                   capture_output=True, text=True)
    out[f"compile_cache_process_seconds_{name}"] = time.perf_counter() - t0
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
      out[f"compile_cache_first_epoch_seconds_{name}"] = json.loads(f.readline())["seconds"]
  out["compile_cache_first_epoch_ratio"] = (out["compile_cache_first_epoch_seconds_warm"]
                                            / out["compile_cache_first_epoch_seconds_off"])
  out["compile_cache_process_ratio"] = (out["compile_cache_process_seconds_warm"]
                                        / out["compile_cache_process_seconds_off"])
  return out
