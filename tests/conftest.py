import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests compile the same small programs (the smoke configs' steps, in this process
# and in the CLI subprocesses it starts): one on-disk compilation cache serves them all.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    __import__("tempfile").gettempdir(), f"alphaprune-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo():
  return REPO


@pytest.fixture(scope="session")
def real_fashion_mnist(tmp_path_factory):
  """A TFDS data_dir holding the real Fashion-MNIST, built once from Debian's IDX files and
  shared by every xdist worker (the first builds it under a lock; the others reuse it)."""
  import fcntl

  from alphaprune.data import prepare as data
  if not data.has_idx_files(data.DEBIAN_FASHION_MNIST):
    pytest.skip("Debian's dataset-fashion-mnist is not installed (launch/test.sh installs it "
                "when run as root)")
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the folder all workers of this session share
  data_dir = root / "tfds_real_fashion_mnist"
  with open(root / "tfds_real_fashion_mnist.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (data_dir / data.LOCAL_NAME / data.LOCAL_VERSION / "dataset_info.json").exists():
      data.build_local_fashion_mnist(data.DEBIAN_FASHION_MNIST, str(data_dir))
  return str(data_dir)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
  """A small Fashion-MNIST-shaped TFDS dataset, prepared (which may import TensorFlow)."""
  import numpy as np

  from test_data_prepare import _write_idx
  from alphaprune.data import prepare as data
  root = tmp_path_factory.mktemp("prepared")
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 100), ("t10k", 20)):
    _write_idx(str(root / f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 255, (n, 28, 28)))
    _write_idx(str(root / f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
  data.build_local_fashion_mnist(str(root), str(root / "tfds"))
  return str(root / "tfds")
