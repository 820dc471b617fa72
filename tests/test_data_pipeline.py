"""data.pipeline: the one choice between the device and the streamed pipeline."""

import dataclasses

import numpy as np
import pytest

from alphaprune.data import pipeline
from alphaprune.data.prepare import DataError
from alphaprune.data.source import Source


def _source(stored=(28, 28, 1), augment="none", rows=100):
  return Source("x", None, {"train": np.arange(rows), "val": np.arange(10), "test": np.arange(10)},
                10, stored, (28, 28, 1), (0.5,), (0.3,), augment)


def test_auto_holds_what_fits_and_streams_the_rest(monkeypatch):
  assert pipeline.choose("auto", _source()) == "device"
  assert pipeline.choose("auto", _source((None, None, 3))) == "stream"  # sizes vary
  assert pipeline.choose("auto", _source(augment="inception_crop_flip")) == "stream"
  monkeypatch.setattr(pipeline.devices, "memory_bytes", lambda: 4 * 28 * 28 * 120)
  assert pipeline.choose("auto", _source()) == "device"  # 120 images: a quarter, just
  assert pipeline.choose("auto", _source(rows=101)) == "stream"
  assert pipeline.choose("stream", _source()) == "stream"  # asked for: as asked


def test_images_of_varying_size_cannot_be_held_on_the_device():
  with pytest.raises(DataError, match="data.pipeline=stream"):
    pipeline.choose("device", _source((None, None, 3)))
  assert dataclasses.replace(_source(), stored_shape=(None, None, 1)).varying_size
