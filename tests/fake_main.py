"""A stand-in for `python -m alphaprune.main` in job-runner tests: records its arguments,
writes a summary.json (and a metrics.jsonl) derived from them, and fails where FAKE_FAIL
says (`seed:method`)."""

import json
import os
import sys

args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
workdir = args["workdir"]
seed, method = int(args["config.seed"]), args.get("config.method", "alpha_blend")
print("args:", json.dumps(sys.argv[1:]))
if f"{seed}:{method}" in os.environ.get("FAKE_FAIL", "").split(","):
  sys.exit(1)
os.makedirs(workdir, exist_ok=True)
keep = float(args.get("config.prune.keep_ratio", 0.35))
accuracy = (0.5 + 0.01 * seed + 0.1 * ("alpha_blend", "scratch", "one_shot").index(method)
            + 0.1 * keep + 0.001 * (args.get("config.prune.criterion") == "random"))
with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
  for epoch, alpha in enumerate((0.5, 0.5, 0.0, 0.0)):
    f.write(json.dumps({"phase": "prune", "stage": epoch // 2, "alpha": alpha,
                        "train_loss": 1.0 / (epoch + 1), "val_loss": 1.1 / (epoch + 1)}) + "\n")
with open(os.path.join(workdir, "summary.json"), "w") as f:
  json.dump({"method": method, "seed": seed, "pruned_test_accuracy": accuracy,
             "pruned_val_accuracy": accuracy - 0.002,
             "teacher_test_accuracy": 0.9, "prunable_params": 100,
             "kept_prunable_params": round(100 * keep), "params_total_after": 5 + round(100 * keep),
             "params_total_before": 105, "epochs_total": 12, "wall_seconds": 1.0}, f)
