"""Instruction tasks with checkable answers, generated from a seed: a corpus on which a verifier can judge.

On a CPU no instruction-tuned LLM judge fits, so the CPU configs (``configs/tiny-rounds.yaml``) battle on these
tasks, judged by the project's verifier judge (``judge.kind: verifier``, exact match after normalisation), scored
on the LLM judge's 1–10 scale. A *solver* — the reference answers as a ``recorded`` model — is the strong competitor.

Each task is an Alpaca-style row (``id``, ``instruction``, ``output`` = the reference answer); the solver's file has
one ``{"prompt_id": id, "response": answer}`` row per task (looked up by source id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "garden",
    "pencil",
    "window",
    "silver",
    "orange",
    "planet",
    "forest",
    "candle",
    "rocket",
    "castle",
    "bridge",
    "winter",
    "summer",
    "yellow",
    "purple",
    "marble",
    "anchor",
    "button",
    "copper",
    "desert",
    "engine",
    "falcon",
    "ginger",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lemon",
    "magnet",
    "needle",
    "oyster",
    "pepper",
    "quartz",
    "rabbit",
    "saddle",
    "tunnel",
    "velvet",
    "walnut",
]


def _add(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(1, 50), r.randint(1, 50)
    return f"What is {a} plus {b}? Answer with the number only.", str(a + b)


def _subtract(r: random.Random) -> tuple[str, str]:
    a, b = sorted((r.randint(1, 60), r.randint(1, 60)), reverse=True)
    return f"What is {a} minus {b}? Answer with the number only.", str(a - b)


def _multiply(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(2, 12), r.randint(2, 12)
    return f"What is {a} times {b}? Answer with the number only.", str(a * b)


def _reverse(r: random.Random) -> tuple[str, str]:
    w = r.choice(WORDS)
    return f"Write the word '{w}' backwards, letter by letter reversed. Answer with the word only.", w[::-1]


def _upper(r: random.Random) -> tuple[str, str]:
    w = r.choice(WORDS)
    return f"Write the word '{w}' in capital letters. Answer with the word only.", w.upper()


def _sort(r: random.Random) -> tuple[str, str]:
    xs = r.sample(range(1, 100), 3)
    return (
        f"Sort these numbers from smallest to largest: {', '.join(map(str, xs))}. Answer as a comma-separated list.",
        ", ".join(map(str, sorted(xs))),
    )


def _convert(r: random.Random) -> tuple[str, str]:
    m = r.randint(2, 40)
    return f"How many centimetres are in {m} metres? Answer with the number only.", str(m * 100)


def _count(r: random.Random) -> tuple[str, str]:
    w = r.choice(WORDS)
    return f"How many letters does the word '{w}' have? Answer with the number only.", str(len(w))


def _first_word(r: random.Random) -> tuple[str, str]:
    ws = r.sample(WORDS, 4)
    return f"What is the first word of this list: {' '.join(ws)}? Answer with the word only.", ws[0]


def _last_word(r: random.Random) -> tuple[str, str]:
    ws = r.sample(WORDS, 4)
    return f"What is the last word of this list: {' '.join(ws)}? Answer with the word only.", ws[-1]


def _extract(r: random.Random) -> tuple[str, str]:
    n, thing, place = r.randint(2, 99), r.choice(WORDS), r.choice(WORDS)
    sentence = f"We found {n} {thing}s near the {place}."
    return f"Extract the number from this sentence: '{sentence}' Answer with the number only.", str(n)


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip


def _date_format(r: random.Random) -> tuple[str, str]:
    y, m, d = r.randint(1990, 2030), r.randint(1, 12), r.randint(1, 28)
    return (
        f"Write the date {d} {MONTHS[m - 1]} {y} in the format YYYY-MM-DD. Answer with the date only.",
        f"{y}-{m:02d}-{d:02d}",
    )


KINDS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "reverse": _reverse,
    "upper": _upper,
    "sort": _sort,
    "convert": _convert,
    "count": _count,
    "first-word": _first_word,
    "last-word": _last_word,
    "extract": _extract,
    "date-format": _date_format,
}


def checkable_tasks(n: int, seed: int = 0, kinds: list[str] | None = None) -> list[dict[str, str]]:
    """``n`` distinct tasks of ``kinds`` (default: all) in turn, deterministic for a seed: ``{id, kind, instruction,
    output}``. A kind whose instructions run out (e.g. a word's reversal: one per word) leaves its turn to the
    others."""
    unknown = sorted(set(kinds or []) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown task kinds {unknown}; known: {', '.join(KINDS)}")
    r = random.Random(seed)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    kinds = list(kinds or KINDS)
    turn = 0
    while len(out) < n:
        if not kinds:
            raise ValueError(f"only {len(out)} distinct checkable tasks exist; asked for {n}")
        kind = kinds[turn % len(kinds)]
        for _ in range(200):  # draws until an unseen instruction; a kind that finds none in 200 is used up
            instruction, answer = KINDS[kind](r)
            if instruction not in seen:
                break
        else:
            kinds.remove(kind)
            continue
        turn += 1
        seen.add(instruction)
        out.append({"id": f"{kind}-{len(out):05d}", "kind": kind, "instruction": instruction, "output": answer})
    return out


def write_tasks(directory: str | Path, n: int, seed: int = 0, kinds: list[str] | None = None) -> tuple[Path, Path]:
    """``tasks.jsonl`` (the corpus) and ``solver.jsonl`` (the reference answers as a recorded model)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tasks = checkable_tasks(n, seed, kinds)
    (d / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    solver = [{"prompt_id": t["id"], "response": t["output"]} for t in tasks]
    (d / "solver.jsonl").write_text("".join(json.dumps(s) + "\n" for s in solver))
    return d / "tasks.jsonl", d / "solver.jsonl"
