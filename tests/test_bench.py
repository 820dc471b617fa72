"""The benchmark measures what it says: interleaved medians, ratios of its own parts,
memory counted byte for byte. (Speed targets live in the benchmark, not in tests.)"""

import json

import pytest

from alphaprune import bench
from alphaprune.bench import __main__ as bench_main, timing

LENET_300_100 = 28 * 28 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10  # 266,610
KERNELS = 28 * 28 * 300 + 300 * 100 + 100 * 10


def test_interleaved_rotates_and_takes_the_median(monkeypatch):
  clock, calls = [0.0], []
  durations = {"a": iter([9.0, 1.0, 3.0, 2.0]), "b": iter([9.0, 5.0, 4.0, 6.0])}

  def fn(name):
    def go():
      calls.append(name)
      clock[0] += next(durations[name])
    return go

  monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
  t = bench.interleaved({"a": fn("a"), "b": fn("b")}, repeats=3)
  # One warm-up each (not timed), then the order rotates: a, b; b, a; a, b.
  assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
  assert t == {"a": 2.0, "b": 5.0}  # medians of (1, 3, 2) and (5, 4, 6)


def test_quartiles_are_of_the_ratios_round_by_round():
  samples = {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 1.0, 1.0, 2.0, 1.0]}
  # Round by round: 1, 2, 3, 2, 5; a ratio of medians (3 / 1) would hide that spread.
  assert bench.quartiles(samples, "a", "b") == pytest.approx([1.5, 4.0])


def test_quick_bench_measures_what_it_says(tmp_path):
  """One run of `python -m alphaprune.bench --quick` (about 30 s), checked two ways."""
  bench_main.main(["--out", str(tmp_path / "bench.json"), "--quick", "--workdir",
              str(tmp_path / "scratch")])
  quick = json.loads((tmp_path / "bench.json").read_text())
  _ratios_are_ratios_of_its_own_measurements(quick)
  _memory_is_counted_byte_for_byte(quick["memory"])


def _ratios_are_ratios_of_its_own_measurements(quick):
  assert quick["blend_layer_step_ratio"] == pytest.approx(
      quick["layer_step_ms"] / quick["dense_step_ms"])
  assert quick["blend_block_step_ratio"] == pytest.approx(
      quick["block_step_ms"] / quick["dense_step_ms"])
  assert quick["driver_dense_step_ratio"] == pytest.approx(
      quick["driver_dense_step_ms"] / quick["dense_step_ms"])
  for key in ("blend_layer_step_ratio", "blend_block_step_ratio", "driver_dense_step_ratio",
              "input_overhead_ratio"):
    low, high = quick[f"{key}_quartiles"]
    assert 0 < low <= high, key
  assert quick["images_per_second_dense"] == pytest.approx(128 / (quick["dense_step_ms"] / 1e3))
  for key in ("input_overhead_ratio", "input_overhead_ratio_fixed_batch", "regression_step_ratio",
              "compact_speedup_b1", "compact_speedup_b32", "compact_speedup_b256"):
    assert 0 < quick[key] < 100, key
  assert quick["train_step_compilations"] == 1  # a count over a real 3-stage run: exact
  assert quick["compilation_run_stages"] == 3
  assert quick["compact_vgg"]["compact_params"] < quick["compact_vgg"]["dense_params"]


def _memory_is_counted_byte_for_byte(m):
  assert m["plain_params_bytes"] == 4 * LENET_300_100
  assert m["plain_opt_state_bytes"] == 4 * LENET_300_100  # SGD momentum: one trace a weight
  # Each branch holds its kernels and its layers' biases; LeNet-300-100 has nothing else.
  assert m["blend_teacher_bytes"] == m["blend_student_bytes"] == 4 * LENET_300_100
  assert m["blend_masks_bytes"] == KERNELS  # one byte (bool) a prunable weight
  assert m["blend_shared_bytes"] == 0
  # The frozen teacher gets no optimizer state: momentum for the student alone, and the
  # plateau rule's six scalars (scale, best value, average, and three counters).
  assert m["blend_opt_state_bytes"] == 4 * LENET_300_100 + 6 * 4
  assert m["blend_total_bytes"] == (m["blend_teacher_bytes"] + m["blend_student_bytes"]
                                    + m["blend_shared_bytes"] + m["blend_masks_bytes"]
                                    + m["blend_opt_state_bytes"])


def test_the_device_check_dry_run_measures_each_section_and_skips_past_its_budget(
    tmp_path, prepared):
  """`python -m alphaprune.bench.device_check --dry-run` as a lent accelerator runs it (at toy
  sizes): a real driver run on prepared data, the streamed input's rate, the step ratios in
  float32 and bfloat16, and a compact ResNet-50; each section's figures in the JSON file."""
  import os
  import subprocess
  import sys
  out = tmp_path / "check.json"
  proc = subprocess.run(
      [sys.executable, "-m", "alphaprune.bench.device_check", f"--out={out}", "--dry-run",
       f"--data-dir={prepared}", "--sections=smoke,stream,lenet5,compact_resnet",
       f"--workdir={tmp_path / 'scratch'}"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr[-2000:]
  check = json.loads(out.read_text())
  sections = check["sections"]
  assert list(sections) == ["smoke", "stream", "lenet5", "compact_resnet"]
  assert not [name for name, figures in sections.items() if "error" in figures], sections
  assert sections["smoke"]["dataset"] == "fashion_mnist"
  assert 0 <= sections["smoke"]["pruned_test_accuracy"] <= 1
  stream = sections["stream"]
  assert stream["stream_data_to_step_rate"] == pytest.approx(
      stream["stream_data_batches_per_second"] / stream["stream_step_batches_per_second"])
  for dtype in ("float32", "bfloat16"):
    assert sections["lenet5"][dtype]["blend_layer_step_ratio"] == pytest.approx(
        sections["lenet5"][dtype]["layer_step_ms"] / sections["lenet5"][dtype]["dense_step_ms"])
  assert sections["compact_resnet"]["compact_params"] < sections["compact_resnet"]["dense_params"]
  assert check["tensorflow_imported"] is False  # prepared data is opened, never prepared
  skipped = subprocess.run(
      [sys.executable, "-m", "alphaprune.bench.device_check", f"--out={out}", "--dry-run",
       "--budget-s=-1", "--sections=compact_vgg"], capture_output=True, text=True)
  assert skipped.returncode == 0, skipped.stderr[-2000:]
  assert "budget" in json.loads(out.read_text())["sections"]["compact_vgg"]["skipped"]


@pytest.mark.parametrize("structure,field", [("heads", "heads"), ("neurons", "mlp_dims")])
def test_the_vit_compact_speedup_times_a_smaller_vit(structure, field):
  from alphaprune.bench import compact
  vit = compact.compact_speedups({"name": "vit", "depth": 2, **bench_main.VIT}, (28, 28, 1), 1,
                                 batches=(2,), iters=1, structure=structure)
  assert vit["compact_params"] < vit["dense_params"]
  dense = {"heads": bench_main.VIT["num_heads"], "mlp_dims": 96}[field]
  assert all(0 < width < dense for width in vit["compact_fields"][field])
  assert vit["compact_speedup_b2"] > 0


def test_the_compact_speedup_prunes_to_the_keep_ratio_asked():
  from alphaprune.bench import compact
  convnet = {"name": "cnn", "kwargs": {"channels": (8, 16), "fc": ()}}
  sizes = {keep: compact.compact_speedups(convnet, (28, 28, 1), 1, batches=(2,), iters=1,
                                          keep_ratio=keep)
           for keep in (0.35, 0.1)}
  assert sizes[0.1]["compact_params"] < sizes[0.35]["compact_params"] < sizes[0.35]["dense_params"]
  assert sizes[0.1]["compact_fields"] != sizes[0.35]["compact_fields"]
