"""The input: the only package that touches TFDS, ArrayRecord, Grain and PIL.

    prepare   finding or preparing a TFDS dataset (the one step that may import TensorFlow),
              the offline Fashion-MNIST built from IDX files
    source    which rows of which split train, validate and test; reading them by index
    records   the ArrayRecord fast path: records read by row, decoded or cut by position
    augment   normalisation and augmentation, on the device and on the host
    order     each epoch's order, from (seed, phase, epoch) alone
    device    the device pipeline: every split in device memory, an epoch one compiled scan
    stream    the streamed pipeline: Grain feeds batches from the host
    pipeline  the one choice between the two, and the calls both offer

Everything else in alphaprune sees pytrees and arrays. The jitted step imports `augment`
alone (this package's `__init__` imports nothing heavier than NumPy and JAX).
"""

from alphaprune.data.prepare import DEBIAN_FASHION_MNIST, DataError, has_idx_files
from alphaprune.data.source import Source, open_source, read

__all__ = ["DEBIAN_FASHION_MNIST", "DataError", "Source", "has_idx_files", "open_source", "read"]
