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
