"""alphaprune: prune a trained network by α-blending it with a masked student.

The pure functions below work on any Flax model's parameter pytrees; the
driver (`alphaprune.train.run`, `python -m alphaprune.main`) is built from them.
"""

from alphaprune.blending import (blend, export_variables, init_params, init_student,
                              masked_student, model_params, split)
from alphaprune.losses import cross_entropy, distillation, loss_fn, mse
from alphaprune.masks import compute_masks, param_counts, prunable_paths, sparsity_per_layer
from alphaprune.optimizer import (lr_scale, make_optimizer, observe_validation_loss,
                                  reset_stage)
from alphaprune.schedules import cosine, describe, explicit, exponential, linear, make_schedule

__all__ = [
    "blend", "export_variables", "init_params", "init_student", "masked_student",
    "model_params", "split", "cross_entropy", "distillation", "loss_fn", "mse",
    "compute_masks", "param_counts", "prunable_paths", "sparsity_per_layer", "lr_scale",
    "make_optimizer", "observe_validation_loss", "reset_stage", "cosine", "describe",
    "explicit", "exponential", "linear", "make_schedule",
]
