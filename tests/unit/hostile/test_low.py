"""Second hostile pass, the low items folded in: a regex verifier reference that does not compile, or nests
quantifiers (catastrophic backtracking), makes that battle invalid with the reason instead of failing every rerun;
`make-tasks --n -5` is refused; an instruction of invisible characters only is quarantined."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from arena_ops.battle.judge import VerifierError, make_verifier
from arena_ops.battle.judging import Game, Judge
from arena_ops.config import load_config
from arena_ops.data.ingest import ingest


@pytest.mark.parametrize("ref", ["(unclosed", "(a+)+$", r"(\d+)+x", "(.*)*"])
def test_an_unusable_regex_reference_is_refused_with_its_reason(ref: str) -> None:
    verify = make_verifier("regex")
    with pytest.raises(VerifierError, match="reference regex"):
        verify("a" * 40 + "b", ref, {})


def test_an_unusable_regex_reference_makes_an_invalid_battle_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt_id": "q", "response": "x"}) + "\n")
    (tmp_path / "arena.yaml").write_text(
        "flywheel: fw\nmodels:\n  target: {name: a, source: {kind: recorded, path: a.jsonl}}\n"
        "  competitors: [{name: b, source: {kind: recorded, path: a.jsonl}}]\n"
        "  judge: {name: b, source: {kind: recorded, path: a.jsonl}}\n"
        "judge: {kind: verifier, verifier: regex}\n"
    )
    cfg = load_config(tmp_path / "arena.yaml")
    judge = Judge(cfg, None)
    prompt = {"prompt_id": "q", "turns": ["What is 2+2?"], "reference": ["(4"]}
    (row,) = asyncio.run(judge.play(Game("b1", prompt, 1, "a", "b", ["4"], ["5"])))
    assert row["status"] == "invalid" and "does not compile" in row["error"]
    ok = {**prompt, "reference": [r"^\s*4(?!\d)"]}
    (row,) = asyncio.run(judge.play(Game("b2", ok, 1, "a", "b", ["4"], ["5"])))
    assert row["status"] == "valid" and row["score_a"] > row["score_b"]


def test_make_tasks_refuses_a_negative_count(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "arena_ops.cli", "data", "make-tasks", str(tmp_path / "t"), "--n", "-5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "--n" in res.stdout + res.stderr and "Traceback" not in res.stderr


def test_an_instruction_of_invisible_characters_only_is_quarantined(tmp_path: Path) -> None:
    lines = [{"instruction": "\u200b\u2063\ufeff"}, {"instruction": "Name a fruit."}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = ingest([str(tmp_path / "a.jsonl")])
    assert got.table.num_rows == 1 and "nothing visible" in got.quarantine["reason"][0].as_py()
