"""The original experiments' settings: CIFAR-10, VGG-style CNN with batch norm,
keep ratio 0.35 (65% of the prunable weights removed at once), exponential
α-schedule with rate 0.05, learning rate 0.001 reset at each stage and cut on
validation-loss plateaus, up to 350 epochs per stage, no early stopping.

  python -m alphaprune.main --config=configs/reference.py --workdir=runs/reference
  python -m alphaprune.main --config=configs/reference.py:regression --workdir=runs/reference_mse

Variants: `regression` (MSE on the teacher's logits, mean-reduced); `smoke`
(seconds: the same recipe on a narrow VGG and 512 examples per split of the
offline Fashion-MNIST, since CIFAR-10 cannot be downloaded everywhere; tests
run it on TFDS mock data). The full config needs a GPU: hundreds of epochs of VGG.

  python -m alphaprune.main --config=configs/reference.py:smoke --workdir=runs/reference_smoke
"""

from alphaprune.config import base_config


def get_config(variant: str = ""):
  c = base_config()
  c.sized_for = "accelerator"  # the driver warns if it finds only a CPU
  c.data.name = "cifar10"
  c.data.batch_size = 128
  c.model.name = "vgg"
  c.model.depth = 11
  c.model.width = 1.0
  c.teacher.epochs = 200
  c.prune.keep_ratio = 0.35
  c.prune.criterion = "magnitude"
  c.prune.init = "he_normal"
  c.schedule.kind = "exponential"
  c.schedule.rate = 0.05
  c.schedule.alpha_min = 0.05
  c.train.optimizer = "sgd"
  c.train.momentum = 0.9
  c.train.learning_rate = 1e-3
  c.train.max_epochs_per_stage = 350
  c.train.advance_after_cuts = 0  # no early stopping, no early stage advance
  c.train.plateau.factor = 0.1
  c.train.plateau.patience = 10
  c.loss.kind = "classification"
  if variant == "regression":
    c.loss.kind = "regression"
    c.loss.target = "teacher"
    c.loss.reduction = "mean"
  elif variant == "smoke":
    c.sized_for = "cpu"
    c.data.name = "fashion_mnist"
    c.data.max_examples = 512
    c.data.batch_size = 16
    c.data.eval_batch_size = 20
    c.data.val_fraction = 0.2
    c.model.width = 0.125
    c.teacher.epochs = 1
    c.schedule.kind = "explicit"
    c.schedule.alphas = (0.5, 0.0)
    c.train.max_epochs_per_stage = 1
    c.report.enabled = False
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use regression or smoke")
  return c
