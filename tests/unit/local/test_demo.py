"""The demo's verdict and ordering (the run itself: tests/integration/test_demo.py, on the stack)."""

from __future__ import annotations

from arena_ops.local.demo import _stage_order, judge_improvement


def rec(model: str, rating: float, low: float, high: float) -> dict:
    return {"model": model, "rating": rating, "ci_low": low, "ci_high": high}


def test_improved_only_when_the_intervals_do_not_overlap() -> None:
    start = rec("g@base", 900.0, 880.0, 920.0)
    text, ok = judge_improvement("g@base", start, "g@i1-sft", rec("g@i1-sft", 1100.0, 1080.0, 1120.0))
    assert ok and "+200 Elo" in text and "do not overlap" in text
    text, ok = judge_improvement("g@base", start, "g@i1-sft", rec("g@i1-sft", 940.0, 915.0, 965.0))
    assert not ok and "did NOT measurably improve" in text and "+40 Elo" in text  # higher, but overlapping
    text, ok = judge_improvement("g@base", start, "g@i1-sft", rec("g@i1-sft", 850.0, 830.0, 870.0))
    assert not ok and "-50 Elo" in text
    text, ok = judge_improvement("g@base", start, "g@i1-sft", None)
    assert not ok and text.startswith("no verdict")


def test_target_labels_in_the_flywheels_order() -> None:
    labels = ["g@i1-sft", "g@i0-dpo", "g@base", "g@i10-sft", "g@i0-sft", "g@i1-rl", "g@i1-dpo"]
    ordered = sorted((rec(m, 0, 0, 0) for m in labels), key=_stage_order)
    assert [r["model"] for r in ordered] == ["g@base", "g@i0-sft", "g@i0-dpo", "g@i1-sft", "g@i1-dpo", "g@i1-rl",
                                             "g@i10-sft"]  # fmt: skip
