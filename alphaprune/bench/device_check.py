"""`python -m alphaprune.bench.device_check --out=FILE.json [--data-dir=DIR] [--dry-run]
[--budget-s=420]`: the one short script to run when an accelerator is lent.

It answers, on that machine, the questions a CPU cannot: does a real run work there, can the
streamed input keep the step fed, what do the blend and bfloat16 cost at ImageNet's shapes,
and does the compact export pay. Sections, in order:

  smoke           configs/reference.py:smoke, a whole run of the driver in its own process
                  (on prepared Fashion-MNIST under --data-dir; the synthetic dataset without)
  stream          batches per second the streamed pipeline delivers onto the device with no
                  training, ÷ LeNet-5's bare step rate (prepared Fashion-MNIST, opened as it
                  is: nothing is prepared here, so TensorFlow is never imported)
  lenet5          blend step ratios of LeNet-5, 28×28×1, batch 128, in float32 and bfloat16
  compact_vgg     dense ÷ compact forward time of a 65%-filter-pruned VGG-11, 32×32×3
  resnet50        blend step ratios of ResNet-50, 224×224×3, 1000 classes, batch 64, float32
                  and bfloat16 (`train.compute_dtype`)
  compact_resnet  dense ÷ compact forward time of a filter-pruned ResNet-50, batches 1 and 256

Each section's figures (or its error, in one line) go into the JSON file as soon as the
section ends, so a run cut short keeps what it measured; a section that would start after
--budget-s seconds is skipped and says so. --dry-run runs every section at toy sizes (a
ResNet-50 of width 1/16 on 32×32 images); tests/test_bench.py runs it on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import jax

from alphaprune.bench import compact, training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="JSON file to write (after each section)")
  parser.add_argument("--data-dir", default=None,
                      help="TFDS folder holding prepared fashion_mnist (smoke and stream)")
  parser.add_argument("--dry-run", action="store_true", help="every section at toy sizes")
  parser.add_argument("--budget-s", type=float, default=420.0,
                      help="no section starts after this many seconds")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help="comma-separated, of: " + ", ".join(SECTIONS))
  parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
  return parser.parse_args(argv)


def smoke(args, workdir: str) -> dict:
  """A whole driver run in a fresh process: its wall time, first-epoch time and accuracy."""
  run_dir = os.path.join(workdir, "smoke")
  flags = [f"--config={REPO}/configs/reference.py:smoke", f"--workdir={run_dir}"]
  if args.data_dir:
    flags.append(f"--config.data.data_dir={args.data_dir}")
  else:
    flags += ["--config.data.name=synthetic", "--config.data.manual_dir="]
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "alphaprune.main", *flags], cwd=REPO,
                        capture_output=True, text=True)
  seconds = time.perf_counter() - t0
  if proc.returncode:
    raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    first = json.loads(f.readline())
  return {"dataset": summary["dataset"], "process_seconds": seconds,
          "first_epoch_seconds": first["seconds"], "pruned_test_accuracy": summary["pruned_test_accuracy"],
          "teacher_test_accuracy": summary["teacher_test_accuracy"]}


def stream(args, workdir: str) -> dict:
  if not args.data_dir:
    return {"skipped": "no --data-dir with prepared fashion_mnist"}
  from alphaprune.bench import inputs
  from alphaprune.data import source as source_lib
  source = source_lib.open_source("fashion_mnist", data_dir=args.data_dir)
  if args.dry_run:  # the tests' prepared split holds 100 images
    lenet = training.Setup({"name": "lenet5"}, (28, 28, 1), 16, 1)
    return inputs.stream_data_rate(source, lenet, 4, workers=(0,), batch=16)
  lenet = training.Setup({"name": "lenet5"}, (28, 28, 1), 128, 1)
  return inputs.stream_data_rate(source, lenet, 400, workers=(0, 2))


def _ratios(setup_args: tuple, steps_repeats: tuple) -> dict:
  """Step ratios in float32 and bfloat16, and the bfloat16 ÷ float32 layer-blend step."""
  model_cfg, shape, batch, classes = setup_args
  num_steps, repeats = steps_repeats
  out = {}
  for dtype in ("float32", "bfloat16"):
    setup = training.Setup(model_cfg, shape, batch, num_steps, classes, dtype=dtype)
    out[dtype] = training.step_ratios(setup, repeats)
  out["bfloat16_layer_step_speedup"] = (out["float32"]["layer_step_ms"]
                                        / out["bfloat16"]["layer_step_ms"])
  return out


def lenet5(args, workdir: str) -> dict:
  return _ratios(({"name": "lenet5"}, (28, 28, 1), 128, 10),
                 (2, 2) if args.dry_run else (20, 11))


def resnet50(args, workdir: str) -> dict:
  if args.dry_run:
    return _ratios(({"name": "imagenet_resnet", "depth": 50, "width": 1 / 16}, (32, 32, 3), 4,
                    10), (2, 2))
  return _ratios(({"name": "imagenet_resnet", "depth": 50}, (224, 224, 3), 64, 1000), (10, 5))


def compact_vgg(args, workdir: str) -> dict:
  if args.dry_run:
    return compact.compact_speedups({"name": "vgg", "depth": 11, "width": 0.125}, (32, 32, 3),
                                    1, batches=(1, 4), iters=1)
  return compact.compact_speedups({"name": "vgg", "depth": 11, "width": 1.0}, (32, 32, 3), 5,
                                  batches=(1, 256), iters=20)


def compact_resnet(args, workdir: str) -> dict:
  if args.dry_run:
    return compact.compact_speedups({"name": "imagenet_resnet", "depth": 50, "width": 1 / 16},
                                    (32, 32, 3), 1, batches=(1, 4), iters=1)
  return compact.compact_speedups({"name": "imagenet_resnet", "depth": 50}, (224, 224, 3), 3,
                                  batches=(1, 256), iters=5)


SECTIONS = {"smoke": smoke, "stream": stream, "lenet5": lenet5, "compact_vgg": compact_vgg,
            "resnet50": resnet50, "compact_resnet": compact_resnet}


def main(argv=None) -> dict:
  args = _parse(argv)
  unknown = set(args.sections.split(",")) - set(SECTIONS)
  if unknown:
    sys.exit(f"error: unknown sections {sorted(unknown)}; use some of {', '.join(SECTIONS)}")
  workdir = args.workdir or tempfile.mkdtemp(prefix="alphaprune-device-check-")
  t0 = time.time()
  results: dict = {"devices": str(jax.devices()), "platform": platform.platform(),
                   "jax": jax.__version__, "dry_run": args.dry_run, "sections": {}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for name in args.sections.split(","):
    section = SECTIONS[name]
    if time.time() - t0 > args.budget_s:
      figures = {"skipped": f"the time budget of {args.budget_s:.0f} s was spent"}
    else:
      start = time.time()
      try:
        figures = section(args, workdir)
      except Exception as e:  # recorded, and the next section runs
        figures = {"error": f"{type(e).__name__}: {e}".splitlines()[0],
                   "traceback": traceback.format_exc(limit=-3)}
      figures["seconds"] = time.time() - start
    results["sections"][name] = figures
    results["seconds"] = time.time() - t0
    results["tensorflow_imported"] = "tensorflow" in sys.modules
    with open(args.out + ".tmp", "w") as f:
      json.dump(results, f, indent=2, default=str)
    os.replace(args.out + ".tmp", args.out)
    print(f"{name}: " + ", ".join(f"{key}={value:.3g}" if isinstance(value, float)
                                  else f"{key}={value}" for key, value in figures.items()
                                  if not isinstance(value, (dict, list)) and key != "traceback"),
          flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
