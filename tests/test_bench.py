import json
import math

from alphaprune import bench

KEYS = ("blend_layer_step_ratio", "blend_block_step_ratio", "train_step_compilations",
        "input_overhead_ratio", "regression_step_ratio", "compact_speedup_b1",
        "compact_speedup_b32", "compact_speedup_b256")


def test_quick_bench_writes_every_key_finite_and_positive(tmp_path):
  out = tmp_path / "bench.json"
  bench.main(["--out", str(out), "--quick", "--workdir", str(tmp_path / "scratch")])
  results = json.loads(out.read_text())
  for key in KEYS:
    assert isinstance(results[key], (int, float)) and math.isfinite(results[key]), key
    assert results[key] > 0, key
  assert results["train_step_compilations"] == 1  # a count, not a timing: exact
  assert results["memory"]["blend_total_bytes"] > results["memory"]["plain_total_bytes"]
