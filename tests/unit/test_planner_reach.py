"""Most capacity a model can reach within max_replicas and its spot share (`plan_index`)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infleet.core.plan_index import build_index, max_reachable_capacity
from infleet.core.planner import ModelRequest, PlanProblem, PoolSupply, VariantOption


@pytest.mark.parametrize(
    ("on_demand", "spot", "replicas", "fraction", "expected"),
    [
        # seed 602's m5: 6 x 0.96 on-demand + 1 x 4.08 spot = 9.84 at a 41% spot share; the best
        # spot variant (6.63) does not fit the 50% share even once (6.63 / 12.39 = 54%).
        (0.96, [6.63, 4.08], 7, 0.5, 9.84),
        # One replica fewer: 5 x 0.96 + 4.08 = 8.88 (46% spot).
        (0.96, [6.63, 4.08], 6, 0.5, 8.88),
        # Only the best spot variant: none fits, so all on-demand: 7 x 0.96.
        (0.96, [6.63], 7, 0.5, 6.72),
        # No share limit: every replica on the best spot variant.
        (0.96, [6.63, 4.08], 3, 1.0, 3 * 6.63),
        # No spot at all.
        (0.96, [6.63, 4.08], 3, 0.0, 3 * 0.96),
        # Spot no better than on-demand: on-demand only.
        (2.0, [1.5, 2.0], 4, 0.5, 8.0),
        # 2 x 3.0 spot + 2 x 1.0 on-demand = 8.0 at exactly 75%.
        (1.0, [3.0], 4, 0.75, 8.0),
        # No non-spot variant and a share below 1: nothing (spot alone would be 100%).
        (0.0, [3.0], 4, 0.5, 0.0),
    ],
)
def test_reach_table(
    on_demand: float, spot: list[float], replicas: int, fraction: float, expected: float
) -> None:
    assert max_reachable_capacity(on_demand, spot, replicas, fraction) == pytest.approx(expected)


def _brute_reach(on_demand: float, spot: list[float], replicas: int, fraction: float) -> float:
    """Every split of ``replicas`` over on-demand and each spot variant (or fewer replicas)."""
    best = 0.0
    options = [on_demand, *spot]
    for counts in itertools.product(range(replicas + 1), repeat=len(options)):
        if sum(counts) > replicas:
            continue
        total = sum(n * c for n, c in zip(counts, options, strict=True))
        on_spot = total - counts[0] * on_demand
        if on_spot <= fraction * total + 1e-9:
            best = max(best, total)
    return best


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.1, 8.0),
    st.lists(st.floats(0.1, 8.0), min_size=1, max_size=3),
    st.integers(1, 5),
    st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]),
)
def test_reach_matches_enumeration(
    on_demand: float, spot: list[float], replicas: int, fraction: float
) -> None:
    got = max_reachable_capacity(on_demand, spot, replicas, fraction)
    assert got == pytest.approx(_brute_reach(on_demand, spot, replicas, fraction), abs=1e-7)


def test_index_targets_what_a_weaker_spot_variant_reaches() -> None:
    """The failing hypothesis case: m5 of seed 602 can reach its 9.64 rps and is planned for it."""
    variants = (
        VariantOption("v0", "gpu-a", 2, 6.63),
        VariantOption("v1", "gpu-b", 1, 0.96),
        VariantOption("v2", "gpu-a", 1, 4.08),
    )
    model = ModelRequest(
        key=("ns", "m5"),
        demand_rps=9.64,
        target_utilization=1.0,
        variants=variants,
        min_replicas=1,
        max_replicas=7,
        spot_max_fraction=0.5,
    )
    pools = (
        PoolSupply("a-spot", "gpu-a", 17, 0.7, "spot"),
        PoolSupply("b-demand", "gpu-b", 19, 4.92, "on-demand"),
    )
    index = build_index(PlanProblem(models=(model,), pools=pools))
    assert index.max_capacity[0] == pytest.approx(9.84)
    assert index.target[0] == pytest.approx(9.64)
    assert index.structural == (None,)
