"""α-schedules: the finite list of α values, one per training stage.

α = 1 is the teacher itself; it is evaluated as the starting point, never
trained, so no schedule contains it. Every schedule ends with α = 0.
"""

from __future__ import annotations

import math
from typing import Sequence

KINDS = ("exponential", "linear", "cosine", "explicit")


def exponential(rate: float = 0.05, alpha_min: float = 0.05) -> list[float]:
  """α_k = exp(−rate·k) for k = 1, 2, … while α_k ≥ alpha_min, then a stage at 0."""
  if rate <= 0:
    raise ValueError(f"schedule.rate must be > 0, got {rate}")
  if not 0 < alpha_min < 1:
    raise ValueError(f"schedule.alpha_min must be in (0, 1), got {alpha_min}")
  alphas, k = [], 1
  while (alpha := math.exp(-rate * k)) >= alpha_min:
    alphas.append(alpha)
    k += 1
  return alphas + [0.0]


def linear(num_stages: int) -> list[float]:
  """num_stages evenly spaced values from 1 − 1/num_stages down to 0."""
  _check_stages(num_stages)
  return [1.0 - k / num_stages for k in range(1, num_stages + 1)]


def cosine(num_stages: int) -> list[float]:
  """α_k = (1 + cos(π·k/num_stages))/2, k = 1 … num_stages (ends at 0)."""
  _check_stages(num_stages)
  return [0.5 * (1.0 + math.cos(math.pi * k / num_stages)) if k < num_stages else 0.0
          for k in range(1, num_stages + 1)]


def explicit(alphas: Sequence[float]) -> list[float]:
  alphas = [float(a) for a in alphas]
  if not alphas or alphas[-1] != 0.0:
    raise ValueError(f"schedule.alphas must end with 0 (the pruned model alone), got {alphas}")
  if any(not 0.0 <= a < 1.0 for a in alphas):
    raise ValueError(f"schedule.alphas must lie in [0, 1) (α = 1 is the teacher), got {alphas}")
  if any(b >= a for a, b in zip(alphas, alphas[1:])):
    raise ValueError(f"schedule.alphas must be strictly decreasing, got {alphas}")
  return alphas


def _check_stages(num_stages):
  if int(num_stages) != num_stages or num_stages < 1:
    raise ValueError(f"schedule.num_stages must be a positive integer, got {num_stages}")


def make_schedule(kind: str, *, rate: float = 0.05, alpha_min: float = 0.05,
                  num_stages: int = 10, alphas: Sequence[float] = ()) -> list[float]:
  if kind == "exponential":
    return exponential(rate, alpha_min)
  if kind == "linear":
    return linear(num_stages)
  if kind == "cosine":
    return cosine(num_stages)
  if kind == "explicit":
    return explicit(alphas)
  raise ValueError(f"unknown schedule.kind {kind!r}; choose one of {KINDS}")


def describe(alphas: Sequence[float]) -> str:
  """A one-screen description of a schedule, printed before a run starts."""
  values = ", ".join(f"{a:.3f}" for a in alphas)
  return f"α-schedule: {len(alphas)} stages (after the teacher at α = 1): {values}"
