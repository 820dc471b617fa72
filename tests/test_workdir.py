"""workdir: the run's lock, its saved config and its metrics log."""

import json

import pytest

from alphaprune import config as config_lib, workdir as workdir_lib


def test_a_held_workdir_is_refused_and_released_with_its_holder(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(config_lib.ConfigError, match="in use by process"):
      workdir_lib.check_free(str(tmp_path))
  workdir_lib.check_free(str(tmp_path))  # released: a resume may take it


def test_a_saved_config_refuses_unsafe_changes_only_where_there_is_a_run_to_resume(tmp_path):
  config = config_lib.base_config()
  workdir_lib.write_config(config, str(tmp_path))
  changed = config_lib.base_config()
  changed.prune.keep_ratio = 0.2
  workdir_lib.check_config(changed, str(tmp_path))  # nothing to resume: no trap
  (tmp_path / "checkpoints" / "prune" / "0").mkdir(parents=True)  # now there is
  config.checkpoint.every_epochs = 5  # safe: where and how often to save
  workdir_lib.check_config(config, str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match=r"different config \(prune.keep_ratio\)"):
    workdir_lib.check_config(changed, str(tmp_path))
  assert config_lib.changed_keys({"a": {"b": (1, 2)}, "c": 1}, {"a": {"b": [1, 2]}, "c": 2}) == ["c"]


def test_metrics_are_appended_and_rewritten_from_the_history(tmp_path):
  log = workdir_lib.Log(str(tmp_path / "metrics.jsonl"))
  record = {"phase": "prune", "epoch": 1, "train_loss": 0.5}
  workdir_lib.append(log, record, 1)
  workdir_lib.append(log, {**record, "epoch": 2}, 2)
  workdir_lib.rewrite(log, [record])
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == [record]
