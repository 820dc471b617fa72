"""The preflight: what it says before a run, and what it refuses before anything is written
(its one-line errors are exercised through the command line in test_main, test_faults and
test_usermodels)."""

import re

from alphaprune import config as config_lib, preflight


def test_the_run_says_its_platform_and_warns_when_an_accelerator_config_finds_a_cpu(capsys):
  c = config_lib.base_config()
  preflight.check_platform(c)
  out, err = capsys.readouterr()
  assert re.fullmatch(r"platform: cpu, \d+ device\(s\) in 1 process\(es\)\n", out) and not err
  c.sized_for = "accelerator"  # configs/reference.py: sized for a GPU or TPU
  preflight.check_platform(c)
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("warning: this config is sized for a GPU or TPU")
  assert "pip install -e '.[cuda]' or -e '.[tpu]'" in err


def test_the_plateau_note_says_when_stages_are_too_short_for_the_rule():
  c = config_lib.base_config()
  c.train.plateau.patience = 2
  for epochs, noted in ((2, True), (3, True), (4, False)):
    c.train.max_epochs_per_stage = epochs
    notes = preflight.plateau_notes(c)
    assert bool(notes) is noted, epochs
    if noted:
      assert notes[0].startswith(f"note: stages of {epochs} epoch(s) are too short")
      assert "the earliest cut follows epoch 3 of a stage" in notes[0]
