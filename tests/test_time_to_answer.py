"""Time to generate a reasoning trace, from decode speeds measured at a few depths (bench.stats)."""

from __future__ import annotations

import pytest

from bench.stats import time_to_generate


def test_interpolates_time_per_token_linearly_in_depth() -> None:
    # 100 tok/s at depth 0 and 50 tok/s at 1,000: 10 ms -> 20 ms per token, 15 ms on average over 0..1,000.
    assert time_to_generate([0, 1000], [100, 50], 0, 1000) == (pytest.approx(15.0), False)
    # A stretch inside the measured range: 12.5 ms at 250 to 17.5 ms at 750, 15 ms on average.
    assert time_to_generate([0, 1000], [100, 50], 250, 500) == (pytest.approx(7.5), False)


def test_piecewise_over_several_depths_matches_a_token_by_token_sum() -> None:
    depths, speeds = [0, 4096, 16384], [120.0, 90.0, 45.0]
    seconds, extrapolated = time_to_generate(depths, speeds, 512, 8000)

    def spt(d: float) -> float:  # seconds per token, linear between the measured depths
        if d <= 4096:
            return 1 / 120 + (1 / 90 - 1 / 120) * d / 4096
        return 1 / 90 + (1 / 45 - 1 / 90) * (d - 4096) / 12288

    by_token = sum(spt(512 + i + 0.5) for i in range(8000))  # midpoint rule, one token at a time
    assert seconds == pytest.approx(by_token, rel=1e-6) and not extrapolated


def test_beyond_the_measured_depths_is_extrapolated_and_said() -> None:
    seconds, extrapolated = time_to_generate([0, 1000], [100, 50], 0, 2000)
    assert seconds == pytest.approx(40.0) and extrapolated  # the line goes on: 10 -> 30 ms per token
    assert time_to_generate([512], [80], 0, 100) == (pytest.approx(1.25), True)  # one depth: held constant


def test_rejects_what_cannot_be_integrated() -> None:
    with pytest.raises(ValueError):
        time_to_generate([0, 1000], [100, 0], 0, 10)
