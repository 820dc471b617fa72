"""config: one loader for every entry point, and the checks that refuse a run up front."""

import pytest

from alphaprune import config as config_lib

SMOKE = "configs/fashion_mnist.py:smoke"


def test_load_applies_overrides_as_the_command_line_does(repo, monkeypatch):
  monkeypatch.chdir(repo)
  config = config_lib.load(SMOKE, ["--config.seed=3", "--config.model.hidden=(4,2)",
                                   "--config.prune.scope=erk"])
  assert (config.seed, config.model.hidden, config.prune.scope) == (3, (4, 2), "erk")


@pytest.mark.parametrize("spec,overrides,needle", [
    (SMOKE, ["--config.keep_rato=1"], "no config key 'keep_rato'"),
    (SMOKE, ["--config.seed=abc"], "config.seed=abc"),
    ("configs/nope.py", [], "does not exist"),
    ("configs/fashion_mnist.py:nope", [], "unknown variant 'nope'"),
])
def test_load_refuses_in_one_line(repo, monkeypatch, spec, overrides, needle):
  monkeypatch.chdir(repo)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load(spec, overrides)
  assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("method,key,value", [
    ("one_shot", "prune.init", "he_sparse"), ("soft", "teacher.trainable", True),
    ("gmp", "prune.criterion", "random"), ("imp", "prune.structure", "n:m"),
    ("scratch", "blend.rescale_student_grad", True), ("gmp", "train.advance_after_cuts", 1),
])
def test_a_method_refuses_a_setting_it_would_ignore(method, key, value):
  config = config_lib.base_config()
  config.method = method
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=f"method={method}"):
    config_lib.validate(config)
  config.method = "alpha_blend"  # which uses all of them
  if key != "prune.criterion" and key != "prune.structure":
    config_lib.validate(config)


def test_scopes_other_than_layer_are_for_unstructured_masks_and_lamp_for_magnitude():
  config = config_lib.base_config()
  config.prune.update(scope="erk", structure="filter")
  with pytest.raises(config_lib.ConfigError, match="prune.scope=erk"):
    config_lib.validate(config)
  config.prune.update(scope="lamp", structure="unstructured", criterion="random")
  with pytest.raises(config_lib.ConfigError, match="prune.scope=lamp"):
    config_lib.validate(config)
