import math

import pytest

from alphaprune import schedules


def test_exponential_matches_the_original_alphas():
  alphas = schedules.exponential(rate=0.05, alpha_min=0.05)
  assert alphas[0] == pytest.approx(0.951, abs=5e-4)  # k = 1
  assert alphas[9] == pytest.approx(0.607, abs=5e-4)  # k = 10
  assert alphas[15] == pytest.approx(0.449, abs=5e-4)  # k = 16
  assert 1.0 not in alphas
  assert alphas[-1] == 0.0 and alphas.count(0.0) == 1
  assert min(alphas[:-1]) >= 0.05 and math.exp(-0.05 * len(alphas)) < 0.05


def test_linear_cosine_explicit():
  assert schedules.linear(4) == [0.75, 0.5, 0.25, 0.0]
  cos = schedules.cosine(4)
  assert cos[1] == pytest.approx(0.5) and cos[-1] == 0.0 and cos == sorted(cos, reverse=True)
  assert schedules.explicit([0.9, 0.3, 0.0]) == [0.9, 0.3, 0.0]
  for bad in ([0.5, 0.6, 0.0], [1.0, 0.0], [0.5], []):
    with pytest.raises(ValueError):
      schedules.explicit(bad)
  with pytest.raises(ValueError):
    schedules.make_schedule("exponential", rate=0.0)


def test_describe_lists_every_stage():
  text = schedules.describe([0.5, 0.25, 0.0])
  assert text == "α-schedule: 3 stages (after the teacher at α = 1): 0.500, 0.250, 0.000"
  alphas = schedules.exponential(0.05, 0.05)
  listed = schedules.describe(alphas).rsplit("): ", 1)[1].split(", ")
  assert f"{len(alphas)} stages" in schedules.describe(alphas)
  assert listed == [f"{alpha:.3f}" for alpha in alphas]  # every one, in order
