"""WizardArena as a benchmark: rate any set of the config's models on a test set or a prompt file.

A *benchmark* is a name, the models it rates (any mix of served, external and recorded models of the config — the
target and the competitors, by name), its prompts (a committed test set of the flywheel, or a prompt file) and a
pairing:

- ``all``: every model against every other on every prompt (the paper's Table 1: "every model battles all others");
- ``budget``: ``pairs_per_prompt`` pairs per prompt, dealt round-robin over a seeded order of all pairs, so every pair
  gets ``⌊N·k/P⌋`` or ``⌈N·k/P⌉`` battles (N prompts, k pairs per prompt, P pairs);
- ``anchor``: every model against one anchor model (Arena-Hard / AlpacaEval style).

Everything is content-keyed (:mod:`arena_ops.battle.parts`): answers by model revision and prompt, judgments by the
two answers and the judge. A benchmark's parts live under ``{flywheel}/bench/{name}/``, so running it again with one
more model generates only that model's answers and judges only the new pairs, and running it unchanged does nothing.
Pairs are oriented by model name (``a < b``), whatever order ``--models`` lists them in, so the same pair is the same
battle in every run and every pairing.

Outputs: the board (Bradley–Terry with bootstrap CIs, anchored where ``rating.anchor`` names one of its models) with
its win-rate matrix, in the flywheel's leaderboard folder as scope ``bench-<name>`` (the Arena view lists it); one
board per half of a Mix test set (``bench-<name>--diverse``, ``--hard``) and per prompt category; the paper's
Table 1 (one column per test set) as Markdown and JSON; and ``{flywheel}/bench/{name}/bench.json``, the summary
``arena bench show`` prints.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from arena_ops import layout
from arena_ops.config import ArenaConfig
from arena_ops.errors import ArenaError, ConfigError, RatingError
from arena_ops.store import ArtifactStore

log = logging.getLogger(__name__)

PAIRINGS = ("all", "budget", "anchor")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RUN = "bench"  # the run name of a benchmark's parts and battle table, under its own base
SCOPE_PREFIX = "bench-"


class BenchError(ArenaError):
    """A benchmark cannot be run or shown as asked; the message names the benchmark and what to do."""


@dataclass(frozen=True)
class BenchRequest:
    name: str
    models: list[str]
    testset: str | None = None
    prompts: str | None = None
    pairing: str = "all"
    pairs_per_prompt: int | None = None  # budget pairing; default battle.pairs_per_prompt
    anchor_model: str | None = None  # anchor pairing; default the first model listed
    limit: int | None = None  # use the first N prompts (by prompt id)

    def source(self) -> dict[str, str]:
        """What the benchmark is of: a test set by name, or a prompt file by its name (not its path, which differs
        between machines and working directories; the path read is kept as ``prompts_from``)."""
        return {"testset": self.testset} if self.testset else {"prompts": _basename(str(self.prompts))}

    @classmethod
    def declared(cls, cfg: ArenaConfig, name: str, **given: Any) -> BenchRequest:
        """Benchmark ``name`` as the config's ``benchmarks`` declares it, with ``given`` settings (not None) over it;
        an undeclared benchmark needs its models and prompts given."""
        given = {k: v for k, v in given.items() if v is not None}
        if given.get("testset") or given.get("prompts"):  # a source given replaces the declared one
            given.setdefault("testset", None)
            given.setdefault("prompts", None)
        found = next((b for b in cfg.benchmarks if b.name == name), None)
        base = found.model_dump(exclude={"name"}) if found else {}
        merged = {**base, **given}
        if not merged.get("models"):
            declared = ", ".join(b.name for b in cfg.benchmarks) or "none"
            raise BenchError(
                f"benchmark {name!r} is not declared in the config's benchmarks (declared: {declared}): give --models "
                "M1,M2,… and --testset NAME or --prompts FILE"
            )
        return cls(name=name, **merged)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def base(flywheel: str, name: str) -> str:
    return f"{flywheel}/bench/{name}"


def summary_key(flywheel: str, name: str) -> str:
    return f"{base(flywheel, name)}/bench.json"


def scope(name: str, part: str | None = None) -> str:
    return f"{SCOPE_PREFIX}{name}" + (f"--{part}" if part else "")


def names(store: ArtifactStore, flywheel: str) -> list[str]:
    """The benchmarks of a flywheel that have a summary, sorted."""
    found = []
    for prefix in store.list(f"{flywheel}/bench"):
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        if NAME.match(name) and store.exists(summary_key(flywheel, name)):
            found.append(name)
    return sorted(found)


def show(cfg: ArenaConfig, store: ArtifactStore, name: str) -> dict[str, Any]:
    """The stored summary of benchmark ``name``."""
    _check_name(name)
    key = summary_key(cfg.flywheel, name)
    if not store.exists(key):
        have = names(store, cfg.flywheel)
        raise BenchError(
            f"flywheel {cfg.flywheel!r} has no benchmark {name!r} (have: {', '.join(have) or 'none'}); "
            f"run one with `arena bench run {name} --models M1,M2 --testset mix`"
        )
    return read_summary(store, cfg.flywheel, name)


# Pairing --------------------------------------------------------------------------------------------------------------


def bench_pairs(
    models: list[str],
    prompt_ids: list[str],
    pairing: str,
    pairs_per_prompt: int = 2,
    anchor: str | None = None,
    seed: int = 0,
) -> dict[str, list[tuple[str, str]]]:
    """``prompt_id → [(model_a, model_b), …]`` with ``model_a < model_b`` (see the module docstring)."""
    ordered = sorted(models)
    every = list(itertools.combinations(ordered, 2))
    if pairing == "all":
        return {pid: list(every) for pid in prompt_ids}
    if pairing == "anchor":
        anchor = anchor or models[0]
        if anchor not in models:
            raise BenchError(f"anchor model {anchor!r} is not among the benchmark's models {models}")
        against = [(min(anchor, m), max(anchor, m)) for m in ordered if m != anchor]
        return {pid: list(against) for pid in prompt_ids}
    if pairing == "budget":
        if pairs_per_prompt < 1:
            raise BenchError(f"pairs_per_prompt must be at least 1, got {pairs_per_prompt}")
        deck = [every[i] for i in np.random.default_rng(seed).permutation(len(every))]
        k = min(pairs_per_prompt, len(deck))
        return {
            pid: sorted(deck[(n * k + j) % len(deck)] for j in range(k)) for n, pid in enumerate(sorted(prompt_ids))
        }
    raise BenchError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")


# Prompts --------------------------------------------------------------------------------------------------------------


def read_prompts(cfg: ArenaConfig, store: ArtifactStore, req: BenchRequest) -> tuple[pa.Table, pa.Table | None]:
    """The benchmark's prompts (sorted by prompt id, each once) and the prompt file's quarantined rows, if any."""
    if bool(req.testset) == bool(req.prompts):
        raise BenchError("give exactly one of --testset NAME (a committed test set) and --prompts FILE")
    quarantine = None
    if req.testset:
        key = layout.testset(cfg.flywheel, req.testset)
        if not store.is_committed(key):
            raise BenchError(
                f"flywheel {cfg.flywheel!r} has no committed test set {req.testset!r} ({store.key_uri(key)}); "
                "build it with `arena data testset` or the arena_testset_build DAG, or pass --prompts FILE"
            )
        table = store.read_artifact_table(key)
    else:
        from arena_ops.data.ingest import ingest

        got = ingest([str(req.prompts)], cfg.storage, what="--prompts")
        table, quarantine = got.table, got.quarantine
        if quarantine.num_rows:
            log.warning("%s: %d row(s) quarantined (kept with the benchmark)", req.prompts, quarantine.num_rows)
    if table.num_rows == 0:
        raise BenchError(f"benchmark {req.name!r}: no prompts in {req.source()}")
    ids = table["prompt_id"].to_pylist()
    first: dict[str, int] = {}
    for k, pid in enumerate(ids):
        first.setdefault(pid, k)
    rows = sorted(first.values(), key=lambda k: ids[k])
    table = table.take(pa.array(rows, pa.int64()))
    if req.limit is not None:
        table = table.slice(0, req.limit)
    return table, quarantine


# Running --------------------------------------------------------------------------------------------------------------


def run_bench(cfg: ArenaConfig, req: BenchRequest, progress: Any = None, plots: bool = True) -> dict[str, Any]:
    """Battle (what is not stored yet), rate and write the benchmark; returns its summary."""
    from arena_ops.battle.run import BattlePlan, BattleRun
    from arena_ops.flywheel import plan_key, serve

    _check_name(req.name)
    specs = _models(cfg, req.models)
    store = ArtifactStore.from_config(cfg.storage)
    key = summary_key(cfg.flywheel, req.name)
    if store.exists(key):
        before = read_summary(store, cfg.flywheel, req.name)
        if before.get("source") != req.source():
            raise BenchError(
                f"benchmark {req.name!r} of flywheel {cfg.flywheel!r} was run on {before.get('source')}; this asks "
                f"for {req.source()}: a benchmark keeps its prompts (pick another name)"
            )
    prompts, quarantine = read_prompts(cfg, store, req)
    ppp = req.pairs_per_prompt or cfg.battle.pairs_per_prompt
    pairs = bench_pairs(
        req.models, prompts["prompt_id"].to_pylist(), req.pairing, ppp, req.anchor_model, cfg.battle.seed
    )
    models = sorted(req.models)
    battle_plan = BattlePlan(prompts.to_pylist(), pairs, models)
    bcfg = cfg.model_copy(deep=True)
    bcfg.battle.sample_limit = None
    meta = {"bench": req.name, "source": req.source(), "pairing": req.pairing, "models": models}
    run = BattleRun(bcfg, store, 0, RUN, battle_plan, base=base(cfg.flywheel, req.name), meta=meta)
    key_of_plan = plan_key(run)
    run.meta["plan_key"] = key_of_plan
    t0 = time.perf_counter()
    work: dict[str, Any] = {"generated": 0, "judged_games": 0, "reused": True}
    if not (store.is_committed(run.table_key) and store.manifest(run.table_key).meta.get("plan_key") == key_of_plan):
        if any(s.source.kind == "served" for s in [*specs, cfg.models.judge]):
            serve(bcfg, None)
        done = asyncio.run(run.run_all(progress))
        work = {"generated": done["generation"]["generated"], "judged_games": done["judging"]["judged"]}
    work["wall_s"] = round(time.perf_counter() - t0, 2)
    battles = store.read_artifact_table(run.table_key)
    invalid = store.read_artifact_table(run.table_key, "invalid.parquet").num_rows
    summary = rate(cfg, store, req, prompts, battles, plots=plots)
    summary.update(
        {
            "source": req.source(),
            "pairing": req.pairing,
            **({"pairs_per_prompt": ppp} if req.pairing == "budget" else {}),
            **({"anchor_model": req.anchor_model or req.models[0]} if req.pairing == "anchor" else {}),
            "prompts": prompts.num_rows,
            **({"prompts_from": str(req.prompts)} if req.prompts else {}),
            "planned": battle_plan.num_battles,
            "invalid": invalid,
            "quarantined_prompts": quarantine.num_rows if quarantine is not None else 0,
            "judge": cfg.models.judge.name,
            "battle_table": store.key_uri(run.table_key),
            "last_run": work,
        }
    )
    with store.artifact_at(base(cfg.flywheel, req.name), meta={"battles": summary.get("battles")}) as w:
        if quarantine is not None and quarantine.num_rows:
            w.put_bytes("quarantine.parquet", _parquet(quarantine))
        w.write_json("bench.json", summary)
    return summary


def read_summary(store: ArtifactStore, flywheel: str, name: str) -> dict[str, Any]:
    """A benchmark's summary, checked against its manifest (one written before summaries had one: as it is)."""
    prefix = base(flywheel, name)
    if store.is_committed(prefix):
        return store.read_artifact_json(prefix, "bench.json")
    return store.read_json(summary_key(flywheel, name))


def _models(cfg: ArenaConfig, wanted: list[str]) -> list[Any]:
    have = {m.name: m for m in cfg.models.battlers()}
    if len(wanted) < 2:
        raise BenchError(f"a benchmark rates at least two models, got {wanted}")
    if len(set(wanted)) != len(wanted):
        raise BenchError(f"--models lists a model twice: {wanted}")
    unknown = [m for m in wanted if m not in have]
    if unknown:
        raise ConfigError(
            f"--models: {unknown} not in the config's models (models.target and models.competitors: {sorted(have)})"
        )
    return [have[m] for m in wanted]


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise BenchError(f"benchmark name {name!r}: use lower-case letters, digits, '-' and '_' (e.g. wizardarena-7b)")


# Rating ---------------------------------------------------------------------------------------------------------------


def rate(
    cfg: ArenaConfig, store: ArtifactStore, req: BenchRequest, prompts: pa.Table, battles: pa.Table, plots: bool = True
) -> dict[str, Any]:
    """Boards of the benchmark (whole, per half of Mix, per category), written as leaderboard scopes; the summary."""
    from arena_ops.rating.battles import validate_battles

    table = validate_battles(battles, source=f"benchmark {req.name}").table
    models = sorted(req.models)
    table = table.filter(pa.compute.and_(_isin(table["model_a"], models), _isin(table["model_b"], models)))
    if table.num_rows == 0:
        raise BenchError(f"benchmark {req.name!r}: no valid battles to rate (every judgment invalid?)")
    whole = req.testset or "prompts"
    boards: dict[str, Any] = {}
    lb = _board(cfg, store, table, scope(req.name), plots)
    boards[whole] = lb
    subsets = _column(prompts, "subset")
    halves: dict[str, Any] = {}
    for part in sorted(set(subsets.values()) - {None}):
        keep = [pid for pid, s in subsets.items() if s == part]
        halves[part] = _sub_board(cfg, store, table, keep, scope(req.name, part), plots)
    categories: dict[str, Any] = {}
    cats = _column(prompts, "category")
    distinct = sorted(set(cats.values()) - {None})
    if len(distinct) > 1:
        for cat in distinct:
            keep = [pid for pid, c in cats.items() if c == cat]
            categories[cat] = _sub_board(cfg, store, table, keep, scope(req.name, "cat-" + _slug(cat)), plots)
    columns = {**{p: halves[p] for p in ("diverse", "hard") if p in halves}, whole: lb}
    return {
        "name": req.name,
        "flywheel": cfg.flywheel,
        "models": models,
        "battles": table.num_rows,
        "board": _rows(lb),
        "win_rates": _win_rates(lb),
        "boards": {k: _rows(v) if not isinstance(v, dict) else v for k, v in {**halves, **columns}.items()},
        "categories": {k: _rows(v) if not isinstance(v, dict) else v for k, v in categories.items()},
        "scopes": [scope(req.name)]
        + [scope(req.name, p) for p, v in halves.items() if not isinstance(v, dict)]
        + [scope(req.name, "cat-" + _slug(c)) for c, v in categories.items() if not isinstance(v, dict)],
        "table1": table1({k: _rows(v) for k, v in columns.items() if not isinstance(v, dict)}),
        "params": {k: lb.params[k] for k in ("bootstrap_rounds", "ci_level", "anchor", "prior_games", "seed")},
    }


def _board(cfg: ArenaConfig, store: ArtifactStore, table: pa.Table, where: str, plots: bool) -> Any:
    from arena_ops.flywheel import rate_battles
    from arena_ops.rating.leaderboard import leaderboard_files

    lb = rate_battles(cfg, table)
    with store.artifact_at(layout.leaderboard(cfg.flywheel, where)) as w:  # one artifact: files from one fit
        for name, data in leaderboard_files(lb, plots=plots).items():
            w.put_bytes(name, data)
    return lb


def _sub_board(cfg: ArenaConfig, store: ArtifactStore, table: pa.Table, pids: list[str], where: str, plots: bool):  # noqa: ANN202
    """The board of the battles on ``pids``; ``{"error": …}`` where they cannot be rated (too few, disconnected)."""
    sub = table.filter(_isin(table["prompt_id"], pids))
    try:
        if sub.num_rows == 0:
            raise RatingError("no valid battles on these prompts")
        return _board(cfg, store, sub, where, plots)
    except RatingError as exc:
        return {"error": str(exc), "battles": sub.num_rows}


def _rows(lb: Any) -> list[dict[str, Any]]:
    keys = ("model", "rating", "ci_low", "ci_high", "rank", "wins", "losses", "ties", "battles", "provisional")
    return [{k: r[k] for k in keys} for r in lb.records()]


def _win_rates(lb: Any) -> dict[str, dict[str, float | None]]:
    """Row model's share of points against the column model (ties half); absent where the pair never met."""
    out: dict[str, dict[str, float | None]] = {}
    for i, a in enumerate(lb.models):
        out[a] = {b: round(float(lb.win_rate[i, j]), 4) for j, b in enumerate(lb.models) if i != j}
        out[a] = {b: v for b, v in out[a].items() if v == v}
    return out


def table1(columns: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The paper's Table 1: one row per model, one column per test set (rating and CI), rows by the last column."""
    names = list(columns)
    last = columns[names[-1]]
    rows = []
    for r in last:
        cells = {}
        for col in names:
            hit = next((x for x in columns[col] if x["model"] == r["model"]), None)
            cells[col] = None if hit is None else {k: hit[k] for k in ("rating", "ci_low", "ci_high")}
        rows.append({"model": r["model"], **cells})
    head = "| model | " + " | ".join(c.capitalize() for c in names) + " |"
    lines = [head, "| --- |" + " ---: |" * len(names)]
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(_cell(row[c]) for c in names) + " |")
    return {"columns": names, "rows": rows, "markdown": "\n".join(lines) + "\n"}


def _cell(c: dict[str, Any] | None) -> str:
    if c is None or c["rating"] is None:
        return "–"
    return f"{c['rating']:.0f} (+{c['ci_high'] - c['rating']:.0f}/-{c['rating'] - c['ci_low']:.0f})"


def _column(prompts: pa.Table, name: str) -> dict[str, str | None]:
    if name not in prompts.column_names:
        return {}
    return dict(zip(prompts["prompt_id"].to_pylist(), prompts[name].to_pylist(), strict=True))


def _isin(column: pa.ChunkedArray, values: list[str]) -> pa.ChunkedArray:
    return pa.compute.is_in(column, value_set=pa.array(values, pa.string()))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "none"


def _parquet(table: pa.Table) -> bytes:
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# Consistency ----------------------------------------------------------------------------------------------------------


def consistency_with(
    cfg: ArenaConfig, store: ArtifactStore, name: str, reference: str, rename: dict[str, str] | None = None
) -> dict[str, Any]:
    """The benchmark's board against a reference board (a published CSV, another board file): the metrics and the
    paper's Table 2 row on both agreement scales."""
    from arena_ops.rating.consistency import Board, consistency_report, read_board, table2_row

    show(cfg, store, name)
    key = layout.leaderboard(cfg.flywheel, scope(name))
    rows = store.read_artifact_json(key, "leaderboard.json")
    ours = Board(
        [r["model"] for r in rows],
        *(np.array([r[c] for r in rows], dtype=float) for c in ("rating", "ci_low", "ci_high")),
        np.array([r["bootstrap_mean"] for r in rows], dtype=float),
        np.array([r["bootstrap_var"] for r in rows], dtype=float),
    )
    report = consistency_report(ours, read_board(reference, rename))
    return {
        "benchmark": name,
        "reference": reference,
        **report,
        "table2": {
            "paper": table2_row(f"WizardArena ({name})", report, "paper"),
            "arena-hard": table2_row(f"WizardArena ({name})", report, "arena-hard"),
        },
    }
