"""The pairwise judge, pure parts: templates, prompt building, verdict parsing, combining the two games, verifiers.

Nothing here does I/O beyond reading a template file; :mod:`arena_ops.battle.run` calls the judge model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from arena_ops.errors import BattleError, ConfigError

TEMPLATE_DIR = Path(__file__).parent / "templates"
SCORE_MIN, SCORE_MAX = 1.0, 10.0


# Templates ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    version: str
    system: str
    user: str
    history: str
    retry: str
    sha256: str


@cache
def load_template(name_or_path: str) -> Template:
    """A packaged template by name (``pairwise-score-v1``) or a YAML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATE_DIR / f"{name_or_path}.yaml"
    try:
        text = path.read_text()
    except OSError:
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
        raise ConfigError(f"judge template {name_or_path!r}: no file {path} (packaged templates: {known})") from None
    data = yaml.safe_load(text)
    missing = [k for k in ("version", "system", "user", "history", "retry") if k not in (data or {})]
    if missing:
        raise ConfigError(f"judge template {path}: missing keys {missing}")
    return Template(
        data["version"],
        data["system"],
        data["user"],
        data["history"],
        data["retry"],
        hashlib.sha256(text.encode()).hexdigest(),
    )


def judge_hash(template: Template, judge_id: str, settings: dict[str, Any]) -> str:
    """Identity of a judging setup: template text + judge model (name and revision) + sampling and mode."""
    payload = json.dumps({"template": template.sha256, "judge": judge_id, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Prompt building -------------------------------------------------------------------------------------------------


def _fence_safe(text: str) -> str:
    # Belt and braces with the tag: a response cannot even spell a marker.
    return text.replace("<<<", "‹‹‹").replace(">>>", "›››")


def build_messages(
    template: Template,
    user_turns: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    system_prompt: str | None = None,
) -> list[dict[str, str]]:
    """Judge messages for the last turn; earlier turns (each assistant's own history) are shown as history."""
    if not (len(user_turns) == len(answers_a) == len(answers_b)) or not user_turns:
        raise BattleError(f"judge input: {len(user_turns)} user turns but {len(answers_a)}/{len(answers_b)} answers")
    tag = hashlib.sha256(
        json.dumps([system_prompt, list(user_turns), list(answers_a), list(answers_b)]).encode()
    ).hexdigest()[:12]
    history = ""
    if len(user_turns) > 1 or system_prompt:
        for side, answers in (("A", answers_a), ("B", answers_b)):
            lines = [f"[System]\n{_fence_safe(system_prompt)}"] if system_prompt else []
            for u, a in zip(user_turns[:-1], answers[:-1], strict=True):
                lines += [f"[User]\n{_fence_safe(u)}", f"[Assistant {side}]\n{_fence_safe(a)}"]
            history += template.history.format(side=side, tag=tag, turns="\n".join(lines)) + "\n"
    user = template.user.format(
        history=history,
        instruction=_fence_safe(user_turns[-1]),
        response_a=_fence_safe(answers_a[-1]),
        response_b=_fence_safe(answers_b[-1]),
        tag=tag,
    )
    return [{"role": "system", "content": template.system.format(tag=tag)}, {"role": "user", "content": user}]


def verdict_regex(explanation_max_chars: int) -> str:
    """The structured-output constraint for a served judge: compact one-line JSON, explanation first (the scores
    follow the reasoning), a bounded explanation without control characters, integer scores 1–10.

    A regex rather than a JSON schema: xgrammar's JSON grammar admits free whitespace and raw control characters,
    and small judges pad with newlines until max_tokens (seen with the tiny models), leaving no verdict at all.
    """
    char = r'([^"\\\x00-\x1f]|\\["\\/nt])'
    score = r"(10|[1-9])"
    return (
        r'\{"explanation": "'
        + char
        + f"{{0,{explanation_max_chars}}}"
        + r'", "score_a": '
        + score
        + r', "score_b": '
        + score
        + r"\}"
    )


# Parsing ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    score_a: float
    score_b: float
    explanation: str


class VerdictParseError(ValueError):
    """The judge's reply holds no usable verdict; the message says why (it is stored with the raw text)."""


#: Replies longer than this are not parsed (a judge's reply is a few hundred tokens; the served judge's constraint
#: bounds it): parsing stays cheap whatever a judge or a response under judgment puts in the reply.
MAX_REPLY_CHARS = 100_000
#: At most this many candidate objects are decoded per reply (each decode is linear; a bound keeps the total linear).
MAX_CANDIDATES = 64
#: One grammar for a score wherever it appears (JSON number, JSON string, prose): optionally signed, decimal, ASCII
#: digits only — no exponent, no digit separators, no full-width or Arabic-Indic digits — then range-checked.
_SCORE = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{1,6})?")
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # typographic minus signs read as signs, never dropped
#: Where a verdict object may start: ``{`` then a verdict key (other braces are never decoded).
_OBJECT_START = re.compile(r'\{\s*"(?:explanation|score_a|score_b)"')
#: Prose fallback: ``Score A: 7`` (markdown and other separators allowed, signs kept, ``1e1``/``7.5.1`` refused).
_SCORE_LINE = re.compile(
    r"score[ _]?(a|b)\b[^\w+\-\u2212\u2013\n]{0,4}([+\-\u2212\u2013]?[0-9][\w.]*)", re.IGNORECASE | re.ASCII
)


def parse_verdict(text: str, quoted: Sequence[str] = ()) -> Verdict:
    """Read ``{"explanation", "score_a", "score_b"}`` from a judge reply; tolerant of prose and code fences.

    Every JSON object that starts with a verdict key anywhere in the reply (fenced or bare) is a candidate, and a
    ``Score A: n`` / ``Score B: n`` pair in the prose around them is one too. Candidates found in ``quoted`` (the
    responses under judgment) are ignored — compared by content, not by spelling, so a judge that echoes a planted
    verdict with other whitespace or key order does not get it counted. Two different verdicts → error. Scores follow
    one grammar (signed decimal, ASCII digits) and must lie in 1–10; both scores and the explanation are required.
    Any failure — including input too long, too deep or too large a number — is a :class:`VerdictParseError`.
    """
    if len(text) > MAX_REPLY_CHARS:
        raise VerdictParseError(f"reply of {len(text)} characters is longer than {MAX_REPLY_CHARS}")
    # The judge saw each response fence-safe (build_messages): a plant is what it could copy, in either spelling.
    quoted = [v for q in quoted if q for v in {q, _fence_safe(q)}]
    planted = {v for q in quoted for v in _verdicts_in(q[:MAX_REPLY_CHARS], strict=False)[0]}
    verdicts, rest = _verdicts_in(text, strict=True)
    own = {v for v in verdicts if _key(v) not in {_key(p) for p in planted}}
    line = _from_score_lines(rest, quoted)
    if line is not None and (not verdicts or _scores(line) not in {_scores(v) for v in own}):
        own.add(line)
    if not own:
        if verdicts:
            raise VerdictParseError("the only verdicts in the reply are copied from the responses under judgment")
        raise VerdictParseError("no JSON verdict and no single 'Score A: n' / 'Score B: n' pair")
    if len({_scores(v) for v in own}) > 1 or len({_key(v) for v in own if v.explanation}) > 1:
        raise VerdictParseError(f"{len(own)} different verdicts in one reply")
    return max(own, key=lambda v: len(v.explanation))


def _verdicts_in(text: str, strict: bool) -> tuple[list[Verdict], str]:
    """The verdict objects in ``text`` and the text with them cut out. ``strict``: a malformed verdict object
    raises (in a judge's reply); otherwise it is skipped (in a response under judgment)."""
    decoder = json.JSONDecoder(
        strict=False, parse_int=str, parse_float=str, parse_constant=str, object_pairs_hook=_unique_keys
    )
    found: list[Verdict] = []
    rest: list[str] = []
    pos = tried = 0
    for m in _OBJECT_START.finditer(text):
        if m.start() < pos:
            continue  # inside an object already decoded
        tried += 1
        if tried > MAX_CANDIDATES:
            if not strict:  # a response under judgment: the verdicts planted so far are enough to compare with
                break
            raise VerdictParseError(f"more than {MAX_CANDIDATES} candidate verdicts in one reply")
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        except _RepeatedKey as exc:
            if strict:
                raise VerdictParseError(f"a verdict object gives {exc} twice") from None
            continue
        except RecursionError:
            if not strict:
                continue
            raise VerdictParseError("a JSON object in the reply is nested too deeply") from None
        if not isinstance(obj, dict) or not ({"score_a", "score_b"} & obj.keys()):
            continue
        try:
            found.append(_verdict_from(obj))
        except VerdictParseError:
            if strict:
                raise
        rest.append(text[pos : m.start()])
        pos = end
    rest.append(text[pos:])
    return found, " ".join(rest)


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: ``{"score_a": 1, "score_a": 10}`` is not a verdict (json keeps the last)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _RepeatedKey(k)
        out[k] = v
    return out


def _key(v: Verdict) -> tuple[float, float, str]:
    """A verdict's content: scores and the explanation with whitespace and case normalised."""
    return v.score_a, v.score_b, " ".join(unicodedata.normalize("NFKC", v.explanation).casefold().split())


def _scores(v: Verdict) -> tuple[float, float]:
    return v.score_a, v.score_b


def _verdict_from(obj: dict[str, Any]) -> Verdict:
    missing = [k for k in ("explanation", "score_a", "score_b") if k not in obj]
    if missing:
        raise VerdictParseError(f"verdict lacks {missing}")
    if not isinstance(obj["explanation"], str):
        raise VerdictParseError("explanation is not a string")
    return Verdict(_score(obj["score_a"], "score_a"), _score(obj["score_b"], "score_b"), obj["explanation"].strip())


def _score(value: Any, key: str) -> float:
    """A score by the one grammar: JSON numbers arrive as their source text (``parse_int=str``), JSON strings as
    written; booleans, nulls, exponents, separators and non-ASCII digits are refused, then 1–10 is checked."""
    shown = value if isinstance(value, str) else json.dumps(value)
    shown = shown if len(shown) <= 24 else shown[:20] + "…"
    if not isinstance(value, str) or not _SCORE.fullmatch(value.strip().translate(_MINUS)):
        raise VerdictParseError(f"{key} {shown} is not a number (signed decimal, ASCII digits)")
    x = float(value.strip().translate(_MINUS))
    if not SCORE_MIN <= x <= SCORE_MAX:
        raise VerdictParseError(f"{key} {shown} outside {SCORE_MIN:g}–{SCORE_MAX:g}")
    return x


def _plain(line: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", line).casefold().split())


def _from_score_lines(text: str, quoted: Sequence[str]) -> Verdict | None:
    """Fallback for prose replies: ``Score A: 7`` … ``Score B: 4``, each exactly once outside quoted text; None when
    there is no such pair. A score that breaks the grammar (``-1``, ``1e1``) is an error, not a skipped line."""
    stripped = text
    for q in quoted:
        if q:
            stripped = stripped.replace(q, " ")
    # A score line that a response under judgment also holds is a plant the judge quoted, not its own.
    planted = {_plain(m.group(0)) for q in quoted if q for m in _SCORE_LINE.finditer(q[:MAX_REPLY_CHARS])}
    hits: dict[str, list[str]] = {"a": [], "b": []}
    for m in _SCORE_LINE.finditer(stripped):
        if _plain(m.group(0)) in planted:
            continue
        side, num = m.group(1), m.group(2)
        after = stripped[m.end() : m.end() + 4]
        if re.match(r"(?:,|\s?[-–]\s?)[0-9]", after):  # "7,5", "7-8", "1,000": not one score
            raise VerdictParseError(f"score_{side.lower()} {num}{after}… is not one number")
        hits[side.lower()].append(num.rstrip("."))
    if len(hits["a"]) != 1 or len(hits["b"]) != 1:
        if len(hits["a"]) > 1 or len(hits["b"]) > 1:
            raise VerdictParseError("several 'Score A' / 'Score B' lines in one reply")
        return None
    return Verdict(_score(hits["a"][0], "score_a"), _score(hits["b"][0], "score_b"), stripped.strip()[:2000])


# Logprob mode ----------------------------------------------------------------------------------------------------

LOGPROB_REGEX = r'\{"score_a": ([1-9]|10), "score_b": ([1-9]|10)\}'


def expected_scores(tokens: Sequence[Any]) -> Verdict:
    """Probability-weighted mean score at the first token of each score (``tokens``: client TokenLogprob list).

    The score token is the first token holding a digit after ``"score_a":`` (tokenisers may glue the space or the
    colon to the digit). Only top-logprob alternatives that read as integers 1–10 (after stripping the same glue)
    count, renormalised over their mass. A "1" that would have continued to "10" counts as 1: tokenisers that split
    "10" make this an approximation.
    """
    text, scores, pending = "", {}, None
    for tok in tokens:
        if pending is None:
            for key in ("score_a", "score_b"):
                if key not in scores and re.search(rf'"{key}"\s*:?\s*$', text):
                    pending = key
        if pending is not None and any(ch.isdigit() for ch in tok.token):
            scores[pending] = _expectation(tok.top or {tok.token: tok.logprob}, pending)
            pending = None
        text += tok.token
    if len(scores) != 2:
        raise VerdictParseError(f"logprob reply {text[:120]!r} lacks score positions")
    return Verdict(scores["score_a"], scores["score_b"], "")


_SCORE_TOKEN = re.compile(r"[\s:]*(\d+)\s*")


def _expectation(top: dict[str, float], key: str) -> float:
    mass = total = 0.0
    for tok, lp in top.items():
        m = _SCORE_TOKEN.fullmatch(tok)
        if m and SCORE_MIN <= int(m.group(1)) <= SCORE_MAX:
            p = math.exp(lp)
            mass += p
            total += p * int(m.group(1))
    if mass == 0:
        raise VerdictParseError(f"{key}: no score token among the top logprobs {sorted(top)[:10]}")
    return total / mass


# Combining the two games -----------------------------------------------------------------------------------------


def combine_games(g1: Verdict, g2: Verdict, method: str = "sum", tie_margin: float = 0.5) -> tuple[str, float, float]:
    """Winner of a pair from game 1 (model_a shown as A) and game 2 (positions swapped: model_a shown as B).

    Returns ``(winner, total_a, total_b)`` with winner ∈ {model_a, model_b, tie}. ``sum``: each model's scores
    summed over both games, a tie when the totals differ by less than ``tie_margin``. ``both_games_agree``: a win
    only when both games prefer the same model, otherwise a tie. A judge that always prefers position A therefore
    yields ties, not wins, under both methods.
    """
    total_a, total_b = g1.score_a + g2.score_b, g1.score_b + g2.score_a
    if method == "sum":
        diff = total_a - total_b
        winner = "tie" if abs(diff) < tie_margin else ("model_a" if diff > 0 else "model_b")
    elif method == "both_games_agree":
        pref1, pref2 = g1.score_a - g1.score_b, g2.score_b - g2.score_a
        winner = "model_a" if pref1 > 0 and pref2 > 0 else "model_b" if pref1 < 0 and pref2 < 0 else "tie"
    else:
        raise ConfigError(f"judge.combine: unknown method {method!r}")
    return winner, total_a, total_b


# Verifier judges ---------------------------------------------------------------------------------------------------


def normalise_answer(text: str) -> str:
    """Case-fold, NFKC, strip surrounding punctuation and collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split()).strip(" .,;:!?\"'`")


class VerifierError(BattleError):
    """A reference the verifier cannot use (a regex that does not compile, or one that could backtrack for ever):
    that battle's verdict is invalid, with this reason — not a crash of every rerun."""


MAX_VERIFIED_CHARS = 20_000  # a regex verifier reads this much of an answer: checkable answers are short
#: A quantified group that itself holds a quantifier — (a+)+, (a|aa)*, (.*)* — can take exponential time on a
#: near-miss (Python's re has no timeout); such references are refused.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{]")


@functools.lru_cache(maxsize=4096)
def _pattern(ref: str) -> re.Pattern[str]:
    if _NESTED_QUANTIFIER.search(ref):
        raise VerifierError(f"reference regex {ref[:80]!r} nests quantifiers (catastrophic backtracking): refused")
    try:
        return re.compile(ref)
    except (re.error, RecursionError, OverflowError) as exc:
        raise VerifierError(f"reference regex {ref[:80]!r} does not compile: {exc}") from None


def make_verifier(kind: str, fn_path: str | None = None) -> Callable[[str, str | None, dict[str, Any]], bool]:
    """``verify(response, reference, prompt_row) -> correct?`` for kind exact | regex | python."""
    if kind == "exact":
        return lambda resp, ref, row: ref is not None and normalise_answer(resp) == normalise_answer(ref)
    if kind == "regex":
        return lambda resp, ref, row: ref is not None and _pattern(ref).search(resp[:MAX_VERIFIED_CHARS]) is not None
    if kind == "python":
        if not fn_path or ":" not in fn_path and "." not in fn_path:
            raise ConfigError(f"judge.verifier_fn must be a dotted path like pkg.module.fn, got {fn_path!r}")
        module, _, name = fn_path.replace(":", ".").rpartition(".")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"judge.verifier_fn {fn_path!r}: cannot import: {exc}") from exc
        return lambda resp, ref, row: bool(fn(resp, ref, row))
    raise ConfigError(f"judge.verifier: unknown kind {kind!r}; expected exact, regex or python")


def verifier_verdict(correct_a: bool, correct_b: bool) -> Verdict:
    """The LLM judge's verdict shape: 10 for a correct answer, 1 for a wrong one."""
    words = {True: "correct", False: "incorrect"}
    return Verdict(
        SCORE_MAX if correct_a else SCORE_MIN,
        SCORE_MAX if correct_b else SCORE_MIN,
        f"verifier: A {words[correct_a]}, B {words[correct_b]}",
    )
