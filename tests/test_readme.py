"""Runs the README's code exactly as written: the functional API on a Linen and on an NNX
model, and the example model file through the command line."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
  """[functional Linen, model file, functional NNX], found by what each holds."""
  with open(os.path.join(REPO, "README.md")) as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  assert len(blocks) == 3
  model_file = next(b for b in blocks if "class MyNet" in b)
  nnx_api = next(b for b in blocks if "nnx.split" in b)
  linen_api = next(b for b in blocks if b not in (model_file, nnx_api))
  return [linen_api, model_file, nnx_api]


def _check_pruned(pruned_kernels, mask_kernels, accuracy):
  # 35% of each kernel survives, and the pruned network alone has learnt the task.
  for k, m in zip(pruned_kernels, mask_kernels):
    assert abs(np.mean(np.asarray(m)) - 0.35) < 0.01
    assert np.all(np.asarray(k)[~np.asarray(m)] == 0)
  assert accuracy > 0.9


def test_readme_functional_example_prunes_a_linen_model():
  code = _blocks()[0]
  assert len([line for line in code.splitlines() if line.strip()]) < 30
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  pruned, masks, net, x, y = env["pruned"], env["masks"], env["net"], env["x"], env["y"]
  accuracy = np.mean(np.argmax(net.apply({"params": pruned}, x), -1) == np.asarray(y))
  names = ("Dense_0", "Dense_1")
  _check_pruned([pruned[n]["kernel"] for n in names], [masks[n]["kernel"] for n in names],
                accuracy)


def test_readme_functional_example_prunes_an_nnx_model():
  code = _blocks()[2]
  assert len([line for line in code.splitlines() if line.strip()]) < 32
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  pruned, masks, x, y = env["pruned"], env["masks"], env["x"], env["y"]
  accuracy = np.mean(np.argmax(pruned(x), -1) == np.asarray(y))
  _check_pruned([pruned.fc1.kernel[...], pruned.fc2.kernel[...]],
                [masks["fc1"]["kernel"], masks["fc2"]["kernel"]], accuracy)


def test_readme_model_file_runs_from_the_command_line(tmp_path):
  code = _blocks()[1]
  assert len([line for line in code.splitlines() if line.strip()]) <= 20
  (tmp_path / "my_model.py").write_text(code)
  command = re.search(r"```bash\n(\.venv/bin/python -m alphaprune\.main [^`]*?my_model[^`]*?)```",
                      open(os.path.join(REPO, "README.md")).read(), re.S).group(1)
  args = shlex.split(command.replace("\\\n", " "))[3:]  # as a shell reads it
  args = [a.replace("--workdir=runs/mine", f"--workdir={tmp_path / 'run'}")
          .replace("my_model.py:", f"{tmp_path}/my_model.py:") for a in args]
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "mock_main.py"), *args,
                         f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.prepare=True", "--config.data.manual_dir="],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MOCK_EXAMPLES": "120"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["model"].endswith("my_model.py:MyNet")
  assert summary["pruned_test_accuracy"] == summary["blended_alpha0_test_accuracy"]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["model"]["kwargs"] == {"hidden": 64}
  # Conv, both dense kernels: every parameter of two or more dimensions, listed before training.
  listed = re.findall(r"^  prunable (\S+) ", proc.stdout, re.M)
  assert listed == ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"], proc.stdout
