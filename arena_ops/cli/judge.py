"""``arena judge``: how far the judge can be trusted — audited against human votes, and its canary."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from arena_ops.cli.common import console

judge_app = typer.Typer(help="Audit the judge against human votes; build its canary.", no_args_is_help=True)


@judge_app.command("audit")
def judge_audit(
    verdicts: Annotated[
        Path, typer.Option(help="The judge's verdicts: battle records (model_a, model_b, winner, question_id).")
    ],
    humans: Annotated[Path, typer.Option(help="Human votes on the same questions and pairs, in the same columns.")],
    answers: Annotated[
        Path | None,
        typer.Option(help="A folder of answers_<model>.jsonl (question_id, text): enables P(prefers the longer)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with every figure.")] = False,
) -> None:
    """Agreement with humans (with and without ties, MT-Bench's definition), Cohen's kappa, position consistency,
    first-position win rate, tie rate, P(prefers the longer answer), Spearman of the two Bradley–Terry boards."""
    from arena_ops.rating.judge_audit import audit, read_answer_lengths, read_verdicts

    lengths = read_answer_lengths(sorted(answers.glob("answers_*.jsonl"))) if answers else None
    out = audit(read_verdicts(verdicts), read_verdicts(humans), lengths)
    if as_json:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
        sys.stdout.write(json.dumps(clean, indent=2, allow_nan=False) + "\n")
        return
    console.print(f"{verdicts.name} against {humans.name}:")
    table = Table("figure", "value")
    for key in (
        "agreement_with_ties",
        "agreement_without_ties",
        "kappa",
        "position_consistency",
        "first_position_win_rate",
        "tie_rate",
        "prefers_longer",
        "spearman_boards",
    ):
        v = out[key]
        table.add_row(key, "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}")
    console.print(table)
    console.print(
        f"{out['n_comparisons']} judge–human comparisons ({out['n_comparisons_without_ties']} without ties) from "
        f"{out['n_judge_verdicts']} verdicts and {out['n_human_votes']} votes; {out['n_position_pairs']} "
        f"position pairs; {out['n_length_verdicts']} verdicts with both lengths"
    )


@judge_app.command("canary-build")
def judge_canary_build(
    humans: Annotated[Path, typer.Option(help="Human votes (model_a, model_b, winner, question_id).")],
    answers: Annotated[Path, typer.Option(help="A folder of answers_<model>.jsonl (question_id, text).")],
    questions: Annotated[Path, typer.Option(help="The questions (JSONL: question_id, text).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The canary file to write (JSONL).")],
    n: Annotated[int, typer.Option(help="Pairs to keep (seeded sample).", min=1)] = 50,
    min_share: Annotated[float, typer.Option(help="The majority a pair's votes need.", min=0.5, max=1.0)] = 0.75,
    seed: Annotated[int, typer.Option(help="Sample seed.")] = 0,
) -> None:
    """A canary (judge.canary.path) from crowd votes: pairs the crowd agreed on, with the answers they voted on."""
    from arena_ops.battle.canary import build_from_votes

    pairs = build_from_votes(
        str(humans), sorted(str(p) for p in answers.glob("answers_*.jsonl")), str(questions), n, min_share, seed
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    console.print(f"wrote {len(pairs)} canary pairs to {out} (set judge.canary.path to it)")
