import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo():
  return REPO


@pytest.fixture(scope="session")
def real_fashion_mnist(tmp_path_factory):
  """A TFDS data_dir holding the real Fashion-MNIST, built once from Debian's IDX files."""
  from alphaprune import data
  if not data.has_idx_files(data.DEBIAN_FASHION_MNIST):
    pytest.skip("Debian's dataset-fashion-mnist is not installed (launch/test.sh installs it "
                "when run as root)")
  data_dir = str(tmp_path_factory.mktemp("tfds_real"))
  data.build_local_fashion_mnist(data.DEBIAN_FASHION_MNIST, data_dir)
  return data_dir
