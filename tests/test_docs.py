"""The docs stay true: every config key documented, every file a document links exists, and
the figures it shows are in the repository."""

import os
import re

from alphaprune import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + [os.path.join("docs", name) for name in
                              sorted(os.listdir(os.path.join(REPO, "docs"))) if name.endswith(".md")]


def _keys(node, prefix=""):
  for key, value in node.items():
    if hasattr(value, "items") and key != "kwargs":
      yield from _keys(value, f"{prefix}{key}.")
    else:
      yield prefix + key


def test_every_config_key_is_in_the_reference():
  text = open(os.path.join(REPO, "docs", "configs.md")).read()
  missing = [key for key in _keys(config_lib.base_config()) if f"`{key}`" not in text
             and not (key in ("prune.n", "prune.m") and "`prune.n`, `prune.m`" in text)]
  assert not missing, missing


def test_every_linked_file_and_image_is_in_the_repository():
  for document in DOCUMENTS:
    text = open(os.path.join(REPO, document)).read()
    folder = os.path.dirname(os.path.join(REPO, document))
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
      if target.startswith(("http://", "https://")):
        continue
      assert os.path.exists(os.path.join(folder, target)), (document, target)


def _commands():
  """Every `python -m alphaprune.X ...` command of the documents' bash blocks and of the kept
  grids' COMMAND files, as argument lists (line continuations joined)."""
  import shlex
  texts = [open(os.path.join(REPO, document)).read() for document in DOCUMENTS]
  blocks = [block for text in texts for block in re.findall(r"```bash\n(.*?)```", text, re.S)]
  results = os.path.join(REPO, "results")
  blocks += [open(os.path.join(results, name, "COMMAND")).read() for name in os.listdir(results)
             if os.path.exists(os.path.join(results, name, "COMMAND"))]
  for block in blocks:
    for line in block.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      if len(words) > 3 and words[1:3] == ["-m", "alphaprune.compare"]:
        yield "compare", words[3:]
      elif len(words) > 3 and words[1:3] == ["-m", "alphaprune.main"]:
        yield "main", words[3:]


def test_every_documented_command_is_valid_as_written(monkeypatch):
  """compare commands parse and every run they would start loads and validates; main
  commands' configs load and validate (the runs themselves are the kept grids')."""
  from alphaprune import compare
  monkeypatch.chdir(REPO)
  seen = {"compare": 0, "main": 0}
  for kind, args in _commands():
    if any(arg.startswith(("--redraw", "--config=configs/NAME", "--config=configs/imagenet"))
           or "NAME" in arg or "DIR" in arg for arg in args):
      continue  # a pattern, not a command (or a dataset that is not here)
    if kind == "compare":
      parsed, overrides, methods, seeds, cells = compare._parse(args)
      compare.check_runs(parsed.config, cells, seeds, methods, overrides)
    else:
      spec = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--config="))
      overrides = [arg for arg in args if arg.startswith("--config.")
                   and not arg.startswith("--config.model.name=my_model")]
      config_lib.validate(config_lib.load(spec, overrides))
    seen[kind] += 1
  assert seen["compare"] >= 3 and seen["main"] >= 2, seen
