"""The one choice between the two input pipelines, made once; the driver holds its answer.

Both pipelines offer the same calls, so the driver never asks which one it has:

* `pipeline.phase(salt, epochs, cfg, teacher=None)` → a phase's input, whose
  `train_epoch(state, cfg, partial, midway)` trains the state's next epoch (or the rest
  of one resumed midway), `evaluate(split, variables, alpha, cfg)` scores a split with
  the phase's loss, `iterator` is what a checkpoint saves of the input (None when the
  order alone says where it stands) and `close()` ends it;
* `pipeline.evaluate(split, variables, cfg)` scores a plain network;
* `pipeline.augments_on_device`: whether the step augments (CIFAR on the device pipeline).

`device` (`DevicePipeline`) holds every split in device memory and trains an epoch as one
compiled scan; `stream` (`StreamPipeline`) feeds batches from the host through Grain, for
datasets larger than a device. `auto` picks `device` when every split fits in a quarter of
one device's memory and needs no host-side augmentation.
"""

from __future__ import annotations

from alphaprune import devices
from alphaprune.data.device import DevicePipeline
from alphaprune.data.prepare import DataError
from alphaprune.data.source import Source
from alphaprune.data.stream import StreamPipeline

Pipeline = DevicePipeline | StreamPipeline


def choose(requested: str, source: Source) -> str:
  """`data.pipeline`, with `auto` resolved; a DataError where the data cannot go the
  requested way."""
  holdable = not source.varying_size and source.augment != "inception_crop_flip"
  if requested == "device" and not holdable:
    raise DataError(f"{source.name}'s images vary in size (or are augmented on the host) and "
                    "cannot be held on the device; use data.pipeline=stream (or auto)")
  if requested != "auto":
    return requested
  fits = 0 <= source.bytes_in_memory() <= devices.memory_bytes() // 4
  return "device" if fits and holdable else "stream"


def open_pipeline(kind: str, source: Source, data_config, seed: int, mesh) -> Pipeline:
  """The chosen pipeline over `source` (`data_config`: the run's `config.data`)."""
  if kind == "device":
    return DevicePipeline.open(source, data_config.eval_batch_size, seed, mesh)
  return StreamPipeline(source, data_config.batch_size, data_config.eval_batch_size, seed, mesh,
                        data_config.workers, data_config.read_threads, data_config.prefetch)
