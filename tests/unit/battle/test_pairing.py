"""Pairings: target vs competitors, all pairs, and seeded sampled pairs stable per prompt."""

from __future__ import annotations

import pytest

from arena_ops.battle.pairing import pairs_for
from arena_ops.errors import ConfigError

MODELS = ["t", "a", "b", "c"]


def test_target_vs_competitors() -> None:
    assert pairs_for("target_vs_competitors", "t", MODELS, "p") == [("t", "a"), ("t", "b"), ("t", "c")]


def test_all_pairs_is_every_unordered_pair_once() -> None:
    pairs = pairs_for("all_pairs", "t", MODELS, "p")
    assert len(pairs) == 6 and len({frozenset(p) for p in pairs}) == 6


def test_sampled_pairs_are_distinct_seeded_and_per_prompt() -> None:
    first = pairs_for("sampled", "t", MODELS, "p1", pairs_per_prompt=3, seed=0)
    assert len(set(first)) == 3 and first == pairs_for("sampled", "t", MODELS, "p1", pairs_per_prompt=3, seed=0)
    across = {tuple(pairs_for("sampled", "t", MODELS, f"p{i}", 2, seed=0)) for i in range(20)}
    assert len(across) > 1  # prompts get different pairs
    assert pairs_for("sampled", "t", MODELS, "p1", pairs_per_prompt=99) == pairs_for("all_pairs", "t", MODELS, "p1")


def test_bad_pairing_inputs() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        pairs_for("round_robin", "t", MODELS, "p")
    with pytest.raises(ConfigError, match="repeat a name"):
        pairs_for("all_pairs", "t", ["a", "a"], "p")
