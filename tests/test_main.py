"""Bad input: one line on stderr, exit code 2, and the workdir untouched."""

import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = f"--config={os.path.join(REPO, 'configs', 'fashion_mnist.py')}:smoke"

BAD = [
    (["--config.model.name=alexnet"], "model.name"),
    (["--config.data.name="], "data.name"),
    (["--config.data.name=no_such_dataset_xyz"], "no_such_dataset_xyz"),
    (["--config.prune.keep_ratio=0.0"], "prune.keep_ratio"),
    (["--config.data.pipeline=device", "--config.checkpoint.every_steps=5"],
     "checkpoint.every_steps needs data.pipeline=stream"),
    (["--config.data.pipeline=stream", "--config.loss.kind=regression",
      "--config.loss.reduction=per_logit"], "loss.reduction=per_logit needs"),
    (["--config.prune.keep_ratio=1.5"], "prune.keep_ratio"),
    (["--config.schedule.kind=exponential", "--config.schedule.rate=-0.1"], "schedule.rate"),
    (["--config.schedule.kind=linear", "--config.schedule.num_stages=0"], "num_stages"),
    (["--config.schedule.alphas=(0.5, 0.7, 0.0)"], "strictly decreasing"),
    (["--config.train.max_epochs_per_stage=0"], "max_epochs_per_stage"),
    (["--config.teacher.epochs=0"], "teacher.epochs"),
    (["--config.data.batch_size=0"], "data.batch_size"),
    (["--config.loss.kind=hinge"], "loss.kind"),
    (["--config.loss.reduction=median"], "loss.reduction"),
    (["--config.loss.target=oracle"], "loss.target"),
    (["--config.prune.criterion=taylor"], "prune.criterion"),
    (["--config.prune.structure=block"], "prune.structure"),
    (["--config.prune.structure=n:m", "--config.prune.n=4", "--config.prune.m=4"], "prune.n"),
    (["--config.prune.scope=global", "--config.prune.structure=filter"], "prune.scope"),
    (["--config.prune.init=zeros"], "prune.init"),
    (["--config.blend.form=channel"], "blend.form"),
    (["--config.train.optimizer=lion"], "train.optimizer"),
    (["--config.train.learning_rate=0"], "train.learning_rate"),
    (["--config.train.plateau.factor=1.5"], "plateau.factor"),
    (["--config.train.plateau.min_delta=0"], "min_delta"),
    (["--config.data.val_fraction=1.0"], "val_fraction"),
    (["--config.method=magic"], "method"),
    (["--config.sized_for=tpu"], "sized_for"),
    (["--config.teacher.checkpoint=/no/such/teacher"], "teacher.checkpoint"),
    (["--config.prune.nope=1"], "nope"),
    (["--config.prune.keep_ratio=abc"], "keep_ratio"),
    ([f"--config.model.name={REPO}/tests/user_models.py:LinenNet", "--config.blend.form=block"],
     "blend.form=block needs a built-in model"),
    (["--config.model.name=nowhere/net.py:Net"], "cannot be loaded"),
    (["--config.data.download=False", "--config.data.name=fashion_mnist",
      "--config.data.manual_dir=/no/such/folder"], "dataset-fashion-mnist"),
]


def _snapshot(folder):
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in files + dirs:
      path = os.path.join(root, name)
      out[os.path.relpath(path, folder)] = open(path, "rb").read() if os.path.isfile(path) else None
  return out


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_config_one_line_exit_2_workdir_untouched(tmp_path, capsys, extra, needle):
  workdir = tmp_path / "work"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("keep me")
  before = _snapshot(workdir)
  argv = ["alphaprune", SMOKE, f"--workdir={workdir}", f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True",
          "--config.data.manual_dir=", *extra]
  with tfds.testing.mock_data(num_examples=60):
    code = run_cli(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2, err
  assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
  assert _snapshot(workdir) == before


def test_teacher_checkpoint_of_another_model_is_refused(tmp_path, capsys):
  from alphaprune import checkpoint
  import numpy as np
  checkpoint.save_model(str(tmp_path / "teacher"), {"params": {"fc1": {"dense": {
      "kernel": np.zeros((3, 3), np.float32)}}}}, {})
  workdir = tmp_path / "work"
  argv = ["alphaprune", SMOKE, f"--workdir={workdir}", f"--config.data.data_dir={tmp_path}/tfds", "--config.data.prepare=True",
          "--config.data.manual_dir=", f"--config.teacher.checkpoint={tmp_path / 'teacher'}"]
  with tfds.testing.mock_data(num_examples=60):
    code = run_cli(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "does not fit model mlp" in err[0], err
  assert not workdir.exists()


def test_real_process_exit_code_and_single_line(tmp_path):
  workdir = tmp_path / "never"
  proc = subprocess.run(
      [sys.executable, "-m", "alphaprune.main", SMOKE, f"--workdir={workdir}",
       "--config.prune.keep_ratio=2"], cwd=REPO, capture_output=True, text=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: prune.keep_ratio=2.0 must be in (0, 1]"]
  assert not workdir.exists()


_RUN_AND_REPORT_TF = """
import runpy, sys
sys.argv = ["alphaprune.main"] + sys.argv[1:]
try:
  runpy.run_module("alphaprune.main", run_name="__main__")
except SystemExit as e:
  code = e.code
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def test_a_run_on_prepared_data_never_imports_tensorflow(tmp_path, prepared):
  """Streamed (the device pipeline reads through the same `data.records`)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
  proc = subprocess.run(
      [sys.executable, "-c", _RUN_AND_REPORT_TF, SMOKE, f"--workdir={tmp_path / 'run'}",
       f"--config.data.data_dir={prepared}", "--config.data.prepare=True", "--config.data.manual_dir=",
       "--config.data.pipeline=stream", "--config.teacher.epochs=1",
       "--config.train.finetune_epochs=0", "--config.train.max_epochs_per_stage=1"],
      cwd=REPO, capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "tensorflow imported: False" in proc.stdout and "done:" in proc.stdout
  # Nothing but our own lines (this data's random labels earn the chance-accuracy warning).
  assert all(line.startswith("warning: ") for line in proc.stderr.splitlines()), proc.stderr


def test_bad_input_on_prepared_data_is_exactly_one_line(tmp_path, prepared):
  """The issue's example: before, TensorFlow's start-up lines came first."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
  proc = subprocess.run(
      [sys.executable, "-m", "alphaprune.main", SMOKE, f"--workdir={tmp_path / 'never'}",
       f"--config.data.data_dir={prepared}", "--config.data.prepare=True", "--config.data.manual_dir=",
       "--config.teacher.checkpoint=/nonexistent"], cwd=REPO, capture_output=True, text=True,
      env=env)
  assert proc.returncode == 2
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      "error: teacher.checkpoint=/nonexistent is not a saved model"), proc.stderr
  assert not (tmp_path / "never").exists()


def test_a_background_thread_traceback_is_held_then_dropped_or_printed(monkeypatch, capsys):
  """A save thread dying while the disk fills must not print around the one line (CI saw
  "RuntimeError: Event loop is closed" there); on a run that ends well it is still printed."""
  import threading
  from alphaprune import main
  monkeypatch.setattr(threading, "excepthook", threading.excepthook)
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)

  def dies():
    raise RuntimeError("Event loop is closed")

  main._hold_background_errors()
  for _ in range(2):
    thread = threading.Thread(target=dies)
    thread.start()
    thread.join()
    assert capsys.readouterr().err == ""
  main._print_held()
  err = capsys.readouterr().err
  assert err.count("RuntimeError: Event loop is closed") == 2 and "Traceback" in err
  main._print_held()
  assert capsys.readouterr().err == ""


def test_an_error_on_a_disk_without_room_for_a_checkpoint_is_a_full_disk(tmp_path, monkeypatch):
  """orbax can lose the ENOSPC on the way (its threads then raise "Event loop is closed"):
  the free space then decides, against the largest checkpoint's size (at least 1 MiB)."""
  import collections
  from alphaprune import main
  step = tmp_path / "checkpoints" / "prune" / "40"
  step.mkdir(parents=True)
  (step / "w").write_bytes(b"0" * (3 * 2**20))
  usage = collections.namedtuple("usage", "total used free")
  for free, full in [(2**10, True), (2 * 2**20, True), (4 * 2**20, False)]:
    monkeypatch.setattr(main.shutil, "disk_usage", lambda _, f=free: usage(0, 0, f))
    assert main._out_of_room(str(tmp_path)) is full
  assert not main._disk_full(RuntimeError("Event loop is closed"))
