"""The original recipe at ImageNet scale: ResNet-50 on ImageNet (ILSVRC-2012), streamed.

keep ratio 0.35 (65% of the prunable weights removed), exponential α-schedule (rate 0.05),
learning rate reset at each stage and cut ×0.1 on validation-loss plateaus, He-initialised
pruned branches. The data are streamed from TFDS's ArrayRecord files by Grain (16 worker
processes a host), each process reading its share of every batch; checkpoints every 1,000
steps and on preemption (SIGTERM). Sized for a TPU slice or a multi-GPU node: global batch
1024, SGD with momentum, stages of at most 10 epochs (an ImageNet epoch is 1,251 steps).
Give it your trained ResNet-50 as the teacher (pretraining one here takes 90 epochs):

  python -m alphaprune.main --config=configs/imagenet.py --workdir=gs://BUCKET/runs/imagenet \\
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets \\
      --config.teacher.checkpoint=gs://BUCKET/resnet50_teacher

ImageNet must be prepared once, as ArrayRecord, where TFDS can find the manual download
(see the README): `tfds build imagenet2012 --file_format=array_record --manual_dir=DIR`.
TFDS's `validation` split (50,000 images) is the test split; the validation split that drives
the plateaus is 1% held out of the training set.

`smoke`: the same recipe, pipeline and model family (ResNet-50 at 1/16 width) on 32×32 images;
the tests run it on TFDS mock data of imagenet2012.
"""

from alphaprune.config import base_config


def get_config(variant: str = ""):
  c = base_config()
  c.sized_for = "accelerator"  # the driver warns if it finds only a CPU
  c.data.name = "imagenet2012"
  c.data.manual_dir = ""
  c.data.download = False  # ImageNet needs a manual download; prepare it beforehand
  c.data.pipeline = "stream"
  c.data.image_size = 224
  c.data.augment = "inception_crop_flip"
  c.data.val_fraction = 0.01
  c.data.batch_size = 1024
  c.data.eval_batch_size = 1024
  c.data.workers = 16
  c.data.read_threads = 4
  c.data.prefetch = 8
  c.model.name = "imagenet_resnet"
  c.model.depth = 50
  c.model.width = 1.0
  c.teacher.epochs = 90
  c.teacher.optimizer = "sgd"
  c.teacher.learning_rate = 0.4
  c.prune.keep_ratio = 0.35
  c.prune.criterion = "magnitude"
  c.prune.init = "he_normal"
  c.schedule.kind = "exponential"
  c.schedule.rate = 0.05
  c.schedule.alpha_min = 0.05
  c.train.optimizer = "sgd"
  c.train.momentum = 0.9
  c.train.learning_rate = 0.04
  c.train.max_epochs_per_stage = 10
  c.train.plateau.factor = 0.1
  c.train.plateau.patience = 2
  c.loss.kind = "classification"
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3
  if variant == "smoke":
    c.sized_for = "cpu"
    c.data.download = True  # TFDS's mock data (tests) "prepares" instantly
    c.data.image_size = 32
    c.data.val_fraction = 0.2
    c.data.batch_size = 16
    c.data.eval_batch_size = 20
    c.data.workers = 0
    c.data.read_threads = 2
    c.data.prefetch = 2
    c.model.width = 1 / 16
    c.teacher.epochs = 1
    c.teacher.learning_rate = 0.01
    c.schedule.kind = "explicit"
    c.schedule.alphas = (0.5, 0.0)
    c.train.learning_rate = 0.01
    c.train.max_epochs_per_stage = 1
    c.checkpoint.every_steps = 2
    c.report.enabled = False
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use smoke")
  return c
