"""The layout's rules, checked on the source: which package may import what, no function
over 60 lines, no module reaching into another's private names, a test file per module."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "alphaprune")
INPUT_LIBRARIES = ("tensorflow_datasets", "array_record", "grain", "PIL")


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        yield os.path.relpath(path, REPO), ast.parse(open(path).read())


def _imported(module: ast.Module) -> set[str]:
  """Top-level names of every module imported anywhere in the file (lazily too), and
  modules named to importlib.import_module."""
  names = set()
  for node in ast.walk(module):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant)):
      names.add(node.args[0].value)
  return {name.split(".")[0] for name in names}


def test_only_the_input_package_touches_tfds_array_record_grain_and_pil():
  for path, module in _modules():
    used = _imported(module) & set(INPUT_LIBRARIES)
    if path.startswith("alphaprune/data/"):
      continue
    allowed = {"grain"} if path == "alphaprune/checkpoint.py" else set()  # Grain's orbax handler
    assert used <= allowed, (path, used)


def test_tensorflow_only_where_a_dataset_is_prepared_and_in_the_benchs_peer():
  users = {path for path, module in _modules() if _imported(module) & {"tensorflow", "keras"}}
  assert users == {"alphaprune/data/prepare.py", "alphaprune/bench/keras_peer.py"}


def test_the_step_and_the_driver_do_not_know_which_pipeline_they_run():
  modules = dict(_modules())
  assert not _imported(modules["alphaprune/steps.py"]) & set(INPUT_LIBRARIES)
  driver = open(os.path.join(REPO, "alphaprune", "train.py")).read()
  for word in ("DevicePipeline", "StreamPipeline", '== "stream"', '== "device"', "inputs.kind",
               "feed", "iterator is None", "splits is None"):
    assert word not in driver, word


def test_no_function_is_over_sixty_lines():
  long = [(path, node.name, node.end_lineno - node.lineno + 1)
          for path, module in _modules() for node in ast.walk(module)
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and node.end_lineno - node.lineno + 1 > 60]
  assert not long, long


def test_no_module_uses_another_modules_private_names():
  for path, module in _modules():
    own = {node.id for node in ast.walk(module) if isinstance(node, ast.Name)}
    for node in ast.walk(module):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alphaprune"):
        assert not [a.name for a in node.names if a.name.startswith("_")], (path, node.module)
      if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
          and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
          and node.value.id not in ("self", "cls") and node.value.id in own):
        imported = {alias.asname or alias.name.split(".")[-1] for imp in ast.walk(module)
                    if isinstance(imp, (ast.Import, ast.ImportFrom))
                    and (getattr(imp, "module", None) or imp.names[0].name).startswith("alphaprune")
                    for alias in imp.names}
        assert node.value.id not in imported, (path, f"{node.value.id}.{node.attr}")


def test_every_module_has_its_test_file():
  missing = []
  for path, _ in _modules():
    parts = path[len("alphaprune/"):-3].split("/")
    if parts[-1] in ("__init__", "__main__"):
      continue
    name = "test_" + "_".join(parts) + ".py"
    if parts[0] == "bench":  # the bench is tested as one package (and its Keras peer)
      name = "test_bench.py" if parts[-1] != "keras_peer" else "test_keras_peer.py"
    if not os.path.exists(os.path.join(REPO, "tests", name)):
      missing.append(name)
  assert not missing, missing
