"""`python -m alphaprune.bench --out=FILE.json [--quick] [--workdir=DIR]`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax

from alphaprune.bench import compact, inputs, training

PRINTED = ("blend_layer_step_ratio", "blend_block_step_ratio", "driver_dense_step_ratio",
           "train_step_compilations", "input_overhead_ratio", "input_overhead_ratio_fixed_batch",
           "stream_input_overhead_ratio_workers0", "stream_input_overhead_ratio_workers1",
           "stream_read_only_overhead_ratio", "stream_data_to_step_rate",
           "compile_cache_first_epoch_ratio", "regression_step_ratio", "compact_speedup_b1",
           "compact_speedup_b32", "compact_speedup_b256", "compact_vit_heads_speedup_b1",
           "compact_vit_heads_speedup_b256", "compact_vit_neurons_speedup_b1",
           "compact_vit_neurons_speedup_b256", "lenet5_blend_layer_step_ratio",
           "keras_epoch_ratio_mlp", "keras_epoch_ratio_lenet5", "keras_dense_epoch_ratio_mlp",
           "keras_dense_epoch_ratio_lenet5")
VIT = {"patch_size": 4, "dim": 48, "num_heads": 4, "mlp_ratio": 2.0, "pool": "token",
       "pre_norm": True}


def _parse(argv):
  parser = argparse.ArgumentParser(description="alphaprune benchmarks (docs/performance.md)")
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--quick", action="store_true", help="a smaller, faster measurement")
  parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
  return parser.parse_args(argv)


def measure(quick: bool, workdir: str) -> dict:
  """Every figure of the bench (the full bench adds LeNet-5, the Keras peer and the
  streamed pipeline on real Fashion-MNIST)."""
  repeats = 3 if quick else 9
  # The step figures' epochs take 0.1-0.3 s on a 2-core CPU: many rounds are cheap, and
  # its noise (±10% between runs) needs them.
  step_repeats = 3 if quick else 31
  num_steps = 20 if quick else 100
  results: dict = {"quick": quick, "repeats": repeats, "step_repeats": step_repeats,
                   "devices": str(jax.devices()), "platform": platform.platform(),
                   "jax": jax.__version__}
  mlp = training.Setup({"name": "mlp", "hidden": (300, 100)}, (28, 28, 1), 128, num_steps)
  results["model"] = "mlp (LeNet-300-100), 28x28x1, batch 128, SGD momentum 0.9"
  results.update(training.step_ratios(mlp, step_repeats))
  results.update(training.regression_ratio(mlp, step_repeats))
  results.update(inputs.input_overhead(mlp, step_repeats, epoch_steps=num_steps * 2))
  results["memory"] = training.memory(mlp)
  if not quick:  # the conv model of the original experiments, and the Keras peer
    lenet = training.Setup({"name": "lenet5"}, (28, 28, 1), 128, 20)
    results["lenet5"] = training.step_ratios(lenet, 11)
    for key in ("blend_layer_step_ratio", "blend_layer_step_ratio_quartiles"):
      results[f"lenet5_{key}"] = results["lenet5"][key]
    from alphaprune.bench import keras_peer
    results.update(keras_peer.keras_epoch_ratios(workdir))
    results.update(inputs.stream_input_overhead(workdir, 5))
    results.update(inputs.compile_cache(workdir))
  vgg = compact.compact_speedups({"name": "vgg", "depth": 11, "width": 0.25}, (32, 32, 3),
                                 repeats, iters=5 if quick else 20)
  results["compact_model"] = "vgg-11 (width 0.25), 32x32x3, filter masks keeping 35% of weights"
  results.update({key: value for key, value in vgg.items() if key.startswith("compact_speedup")})
  results["compact_vgg"] = vgg
  if not quick:
    results["compact_mlp"] = compact.compact_speedups({"name": "mlp", "hidden": (300, 100)},
                                                      (28, 28, 1), repeats)
    for structure in ("heads", "neurons"):  # the ViT of configs/fashion_mnist.py:vit
      vit = compact.compact_speedups({"name": "vit", "depth": 3, **VIT}, (28, 28, 1), repeats,
                                     structure=structure)
      results[f"compact_vit_{structure}"] = vit
      for batch in (1, 32, 256):
        results[f"compact_vit_{structure}_speedup_b{batch}"] = vit[f"compact_speedup_b{batch}"]
  results.update(inputs.compilations(workdir))
  return results


def _line(results: dict, key: str) -> str:
  value = results[key]
  line = f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}"
  if f"{key}_quartiles" in results:  # the middle half of the round-by-round ratios
    line += " (quartiles {:.3f}-{:.3f})".format(*results[f"{key}_quartiles"])
  return line


def main(argv=None) -> dict:
  args = _parse(argv)
  workdir = args.workdir or tempfile.mkdtemp(prefix="alphaprune-bench-")
  t0 = time.time()
  results = measure(args.quick, workdir)
  results["bench_seconds"] = time.time() - t0
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  for key in PRINTED:
    if key in results:
      print(_line(results, key))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
