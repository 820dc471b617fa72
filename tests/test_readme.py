"""Runs the README's functional-API example exactly as written."""

import os
import re

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert len(blocks) == 1
  return blocks[0]


def test_readme_example_is_short_and_prunes_a_user_model():
  code = _example()
  assert len([line for line in code.splitlines() if line.strip()]) < 30
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  pruned, masks, net, x, y = env["pruned"], env["masks"], env["net"], env["x"], env["y"]
  # 35% of each kernel survives, and the pruned network alone has learnt the task.
  for m in jax.tree.leaves(masks):
    assert abs(np.mean(np.asarray(m)) - 0.35) < 0.01
  kernels = [pruned["Dense_0"]["kernel"], pruned["Dense_1"]["kernel"]]
  for k, m in zip(kernels, [masks["Dense_0"]["kernel"], masks["Dense_1"]["kernel"]]):
    assert np.all(np.asarray(k)[~np.asarray(m)] == 0)
  accuracy = np.mean(np.argmax(net.apply({"params": pruned}, x), -1) == np.asarray(y))
  assert accuracy > 0.9
