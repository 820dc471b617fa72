"""Real Fashion-MNIST, sized for a 2-core CPU.

  python -m alphaprune.main --config=configs/fashion_mnist.py:quick --workdir=runs/fmnist_quick

Variants: (none) the full CPU run; `quick` the whole pipeline in minutes (what
the README's first command runs); `smoke` seconds, for tests (mock data).
"""

from alphaprune.config import base_config


def get_config(variant: str = ""):
  c = base_config()
  c.data.name = "fashion_mnist"
  c.model.name = "lenet5"
  c.teacher.epochs = 20
  c.teacher.optimizer = "adam"
  c.teacher.learning_rate = 1e-3
  c.prune.keep_ratio = 0.35
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-3
  c.schedule.kind = "linear"
  c.schedule.num_stages = 10
  c.train.max_epochs_per_stage = 5
  c.train.finetune_epochs = 10
  c.train.plateau.patience = 2
  c.train.plateau.factor = 0.5
  if variant == "quick":
    c.teacher.epochs = 8
    c.schedule.num_stages = 5
    c.train.max_epochs_per_stage = 2
    c.train.finetune_epochs = 6
  elif variant == "smoke":
    c.data.name = "mnist"
    c.data.batch_size = 32
    c.data.eval_batch_size = 50
    c.data.val_fraction = 0.2
    c.model.name = "mlp"
    c.model.hidden = (32, 16)
    c.teacher.epochs = 2
    c.schedule.kind = "explicit"
    c.schedule.alphas = (0.5, 0.0)
    c.train.max_epochs_per_stage = 2
    c.train.finetune_epochs = 1
    c.report.enabled = False
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use quick or smoke")
  return c
