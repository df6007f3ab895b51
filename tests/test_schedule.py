"""The warm-up + cosine learning-rate factor the tiny trainers share."""

from __future__ import annotations

import pytest

from zoo.schedule import warmup_cosine


def test_warm_up_rises_linearly_to_the_peak():
    assert warmup_cosine(0, warmup=4, progress=0.0) == pytest.approx(0.25)
    assert warmup_cosine(1, warmup=4, progress=0.0) == pytest.approx(0.5)
    assert warmup_cosine(3, warmup=4, progress=0.0) == pytest.approx(1.0)


def test_cosine_decays_monotonically_to_the_floor_and_stays_there():
    factors = [warmup_cosine(s, warmup=1, progress=s / 100, floor=0.1) for s in range(0, 101)]
    assert factors[0] == pytest.approx(1.0) and factors[50] == pytest.approx(0.55) and factors[-1] == pytest.approx(0.1)
    assert all(later <= earlier for earlier, later in zip(factors, factors[1:]))
    assert warmup_cosine(500, warmup=1, progress=5.0, floor=0.1) == pytest.approx(0.1)  # past the end
