"""Real Fashion-MNIST with LeNet-300-100, sized for a 2-core CPU.

  python -m alphaprune.main --config=configs/fashion_mnist.py:quick --workdir=runs/fmnist_quick

Variants: (none) the full CPU run, the exponential α-schedule of the original
experiments (rate 0.05, 60 stages); `quick` a 5-stage linear schedule, the
whole pipeline in a few minutes (what the README's first command runs);
`compare` the size `python -m alphaprune.compare` uses (4 linear stages of 2 epochs, 4
fine-tuning epochs: every method × 5 keep ratios × 3 seeds in about an hour on 2 cores);
`cnn_compare` the `cnn` model at that size (2 stages of 1 epoch, 1 fine-tuning epoch);
`cnn` the original experiment in miniature: a small CNN with batch norm (conv 16 →
pool → conv 32 → pool → 128 → 10) whose convolutions are all pruned with
He-initialised branches, the whole pipeline in about 6 minutes on 2 cores;
`convnet_compare` a conv net whose weights are in its convolutions (four conv 3×3-BN-ReLU
→ pool units of 16, 32, 64 and 128 channels, then the head: 95% of the prunable weights are
convolution kernels; teacher about 0.915) at compare size (4 linear stages of 2 epochs, 2
fine-tuning epochs); `original` the original experiments' recipe on that conv net, sized for
a 2-core CPU: SGD with momentum at 0.001, the exponential schedule (rate 0.05: 60 stages),
the rate reset each stage and cut on plateaus inside it (stages of 3 epochs, patience 1), on
12,000 training images;
`vit` a vision transformer (patches of 4×4, width 48, 3 pre-norm blocks of 4 heads, MLP
ratio 2, class token) at compare size, Adam; `vit_smoke` it at smoke size;
`smoke` seconds on the same real data (a first try; tests run it on TFDS mock data).

  python -m alphaprune.main --config=configs/fashion_mnist.py:cnn --workdir=runs/fmnist_cnn

  python -m alphaprune.main --config=configs/fashion_mnist.py:smoke --workdir=runs/fmnist_smoke

The default is LeNet-300-100; `--config.model.name=lenet5` switches to LeNet-5.
"""

from alphaprune.config import base_config


def _linear(c, *, teacher_epochs, stages, epochs_per_stage, finetune_epochs):
  """A short run: the teacher, `stages` linear α-stages of `epochs_per_stage` epochs, then
  fine-tuning."""
  c.teacher.epochs = teacher_epochs
  c.schedule.kind = "linear"
  c.schedule.num_stages = stages
  c.train.max_epochs_per_stage = epochs_per_stage
  c.train.finetune_epochs = finetune_epochs


def _vit(c, dim=48, depth=3, heads=4):
  c.model.name = "vit"
  c.model.depth = depth
  c.model.kwargs = {"patch_size": 4, "dim": dim, "num_heads": heads, "mlp_ratio": 2.0,
                    "pool": "token", "pre_norm": True}


def _smoke(c):
  """Seconds: a small model, 2 teacher epochs, 2 α-stages of 2 epochs, 1 fine-tuning epoch."""
  c.data.batch_size = 32
  c.data.eval_batch_size = 50
  c.data.val_fraction = 0.2
  c.model.hidden = (32, 16)
  c.teacher.epochs = 2
  c.schedule.kind = "explicit"
  c.schedule.alphas = (0.5, 0.0)
  c.train.max_epochs_per_stage = 2
  c.train.finetune_epochs = 1
  c.report.enabled = False


def _convnet(c):
  """A conv net whose prunable weights are 95% convolution kernels: the `cnn` model with
  four conv-BN-ReLU-pool units and no hidden dense layer."""
  c.model.name = "cnn"
  c.model.kwargs = {"channels": (16, 32, 64, 128), "fc": ()}


def _original_recipe(c):
  """The original experiments' recipe (configs/reference.py) on the conv net, sized so a run
  takes minutes here: 12,000 training images (of 54,000) and stages of 3 epochs (not up to
  350), with patience 1 so that the plateau rule can cut the rate inside a stage (after its
  second epoch at the earliest)."""
  _convnet(c)
  c.data.max_examples = 12_000
  c.teacher.epochs = 12
  c.schedule.update(kind="exponential", rate=0.05, alpha_min=0.05)
  c.train.update(optimizer="sgd", momentum=0.9, learning_rate=1e-3, max_epochs_per_stage=3,
                 finetune_epochs=0)
  c.train.plateau.update(factor=0.1, patience=1, cooldown=0, min_delta=1e-4)
  c.train.log_student_norms = True
  c.checkpoint.every_epochs = 100  # stage ends only: 60 stages
  c.report.enabled = True


def get_config(variant: str = ""):
  c = base_config()
  c.data.name = "fashion_mnist"
  c.data.batch_size = 128
  c.model.name = "mlp"
  c.model.hidden = (300, 100)
  c.teacher.epochs = 30
  c.teacher.optimizer = "adam"
  c.teacher.learning_rate = 1e-3
  c.prune.keep_ratio = 0.35
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-3
  c.schedule.kind = "exponential"
  c.schedule.rate = 0.05
  c.schedule.alpha_min = 0.05
  c.train.max_epochs_per_stage = 3
  c.train.finetune_epochs = 20
  c.train.plateau.patience = 2
  c.train.plateau.factor = 0.5
  if variant == "quick":
    _linear(c, teacher_epochs=15, stages=5, epochs_per_stage=3, finetune_epochs=10)
  elif variant == "compare":
    _linear(c, teacher_epochs=15, stages=4, epochs_per_stage=2, finetune_epochs=4)
    c.report.enabled = False
  elif variant == "cnn":
    c.model.name = "cnn"  # channels (16, 32), fc (128,): models.CNN's defaults
    _linear(c, teacher_epochs=10, stages=5, epochs_per_stage=2, finetune_epochs=4)
  elif variant == "cnn_compare":
    c.model.name = "cnn"
    _linear(c, teacher_epochs=10, stages=2, epochs_per_stage=1, finetune_epochs=1)
    c.report.enabled = False
  elif variant == "convnet_compare":
    _convnet(c)
    _linear(c, teacher_epochs=12, stages=4, epochs_per_stage=2, finetune_epochs=2)
    c.report.enabled = False
  elif variant == "original":
    _original_recipe(c)
  elif variant == "vit":
    _vit(c)
    _linear(c, teacher_epochs=20, stages=4, epochs_per_stage=2, finetune_epochs=2)
    c.report.enabled = False
  elif variant == "vit_smoke":
    _vit(c, dim=16, depth=2, heads=2)
    _smoke(c)
  elif variant == "smoke":
    _smoke(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; use quick, compare, cnn, cnn_compare, "
                     "convnet_compare, original, vit, vit_smoke or smoke")
  return c
