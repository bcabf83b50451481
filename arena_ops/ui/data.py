"""What the Arena UI shows, read from the artifact store. Nothing here fits or bootstraps: the Elo DAG wrote the
leaderboards, the rounds wrote their battle tables and reports; this module only reads, filters and pages them.

Every name that becomes part of a store key (flywheel, scope, run) is checked against what the store lists first,
so a request cannot point the reader outside the flywheel's artifacts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from arena_ops import bench, catalogue, layout
from arena_ops.errors import ArenaError
from arena_ops.store import ArtifactStore

VERDICTS = ("model_a", "model_b", "tie", "tie_bothbad", "invalid")
_DICT_COLUMNS = ["model_a", "model_b", "winner"]
_LIST_COLUMNS = ["battle_id", "prompt_id", "iteration", "run", "model_a", "model_b", "winner", "score_a", "score_b"]
# A target version: name@base, name@i{iteration}-{stage} (the model that battled), or name@{iteration} (older boards).
_VERSIONED = re.compile(r"^(?P<name>.+)@(?:(?P<base>base)|i(?P<it>\d+)-(?P<stage>[a-z]+)|(?P<legacy>\d+))$")
_STAGE_ORDER = {"init": -1, "sft": 0, "dpo": 1, "rm": 2, "rl": 3}


def version_order(label: str) -> tuple[int, int] | None:
    """Sort key of a target version label (older first); None for a model that is not a target version."""
    m = _VERSIONED.match(label)
    if m is None:
        return None
    if m["base"]:
        return (-1, 0)
    if m["legacy"]:
        return (int(m["legacy"]), 0)
    return (int(m["it"]), 1 + _STAGE_ORDER.get(m["stage"], 9))


class NotFound(ArenaError):
    """The flywheel, scope, run or battle asked for does not exist in the store."""


@dataclass(frozen=True)
class BattleFilter:
    model_a: str | None = None  # with model_b: that pair in either order; alone: any battle of that model
    model_b: str | None = None
    verdict: str | None = None  # one of VERDICTS, or a model name = battles that model won
    prompt: str | None = None  # substring of the prompt id or of the first user turn (case-insensitive)
    iteration: int | None = None
    run: str | None = None


class ArenaReader:
    """Reads the flywheels of one store: ``names`` (the flywheel folder's, listed even before they wrote anything),
    else every flywheel the store holds."""

    def __init__(self, store: ArtifactStore, names: list[str] | None = None) -> None:
        self.store = store
        self.names = names

    # Names ----------------------------------------------------------------------------------------------------------

    def flywheels(self) -> list[str]:
        if self.names is not None:
            return list(self.names)
        return [
            f
            for f in self.store.list_flywheels()
            if self.store.exists(f"{f}/leaderboard/leaderboard.json")
            or self.store.list_iterations(f)
            or bench.names(self.store, f)
        ]

    def _flywheel(self, flywheel: str) -> str:
        if flywheel not in self.flywheels():
            raise NotFound(f"no flywheel {flywheel!r} in {self.store.uri} (have {self.flywheels()})")
        return flywheel

    def scopes(self, flywheel: str) -> list[dict[str, Any]]:
        """The leaderboards of a flywheel: ``all`` battles, then one per test set (see ``flywheel.elo_update``),
        then each benchmark's (see :mod:`arena_ops.bench`)."""
        prefix = f"{self._flywheel(flywheel)}/leaderboard"
        out = []
        if self.store.exists(f"{prefix}/scopes.json"):
            out = [
                {k: s[k] for k in ("scope", "label", "battles")}
                for s in self.store.read_artifact_json(prefix, "scopes.json")
            ]
        elif self.store.exists(f"{prefix}/leaderboard.json"):  # written before per-test-set boards existed
            out = [{"scope": "all", "label": "All battles", "battles": None}]
        for name in bench.names(self.store, flywheel):
            summary = bench.read_summary(self.store, flywheel, name)
            for sc in summary.get("scopes", []):
                part = sc.removeprefix(bench.scope(name)).removeprefix("--")
                label = f"Benchmark {name}" + (f": {part}" if part else "")
                out.append({"scope": sc, "label": label, "battles": summary["battles"] if not part else None})
        return out

    def _scope_key(self, flywheel: str, scope: str) -> str:
        if scope not in {s["scope"] for s in self.scopes(flywheel)}:
            raise NotFound(f"flywheel {flywheel!r} has no leaderboard {scope!r}")
        return f"{flywheel}/leaderboard" + ("" if scope == "all" else f"/{scope}")

    # Leaderboards --------------------------------------------------------------------------------------------------

    def leaderboard(self, flywheel: str, scope: str = "all") -> dict[str, Any]:
        key = self._scope_key(flywheel, scope)
        params = self.store.read_artifact_json(key, "params.json")
        rows = self.store.read_artifact_json(key, "leaderboard.json")
        return {"flywheel": flywheel, "scope": scope, "ci_level": params.get("ci_level", 0.95), "rows": rows}

    def win_rates(self, flywheel: str, scope: str = "all") -> dict[str, Any]:
        """Empirical win rate of the row model against the column model (ties count half), models in board order;
        ``None`` where the pair never met."""
        key = self._scope_key(flywheel, scope)
        models = [r["model"] for r in self.store.read_artifact_json(key, "leaderboard.json")]
        index = {m: k for k, m in enumerate(models)}
        matrix: list[list[float | None]] = [[None] * len(models) for _ in models]
        for r in self.store.read_artifact_table(key, "win_rates.parquet").to_pylist():
            value = r["empirical"]
            if r["model_a"] in index and r["model_b"] in index and value == value:  # NaN = never met
                matrix[index[r["model_a"]]][index[r["model_b"]]] = round(float(value), 4)
        return {"flywheel": flywheel, "scope": scope, "models": models, "matrix": matrix}

    def history(self, flywheel: str) -> dict[str, Any]:
        """Round-over-round ratings, and the target's series: at each recomputation, the rating of the newest
        target version (``name@i``) it had seen."""
        from arena_ops.flywheel import read_history

        entries = read_history(self.store, self._flywheel(flywheel))
        target: list[dict[str, Any]] = []
        for e in entries:
            versions = [(order, name) for name in e["ratings"] if (order := version_order(name)) is not None]
            if versions:
                _, name = max(versions)
                base = _VERSIONED.match(name)["name"]  # type: ignore[index]
                target.append(
                    {"iteration": e["iteration"], "model": name, "target": base, "rating": e["ratings"][name]}
                )
        return {"flywheel": flywheel, "entries": entries, "target": target}

    def progress(self, flywheel: str) -> dict[str, Any]:
        """The flywheel's story on its test-set board (the paper's way to show progress): the target's versions in
        stage order across iterations (base, i0-sft, i0-dpo, i0-rl, i1-sft, …) with their intervals, the competitors
        as reference bands, and which version each round kept (the model the next iteration starts from)."""
        scopes = [s for s in self.scopes(flywheel) if s["scope"].startswith("eval-")]
        if not scopes:
            return {"flywheel": flywheel, "scope": None, "versions": [], "references": [], "kept": []}
        scope = next((s for s in scopes if s["scope"] == "eval-mix"), scopes[0])
        board = self.leaderboard(flywheel, scope["scope"])
        kept = self.kept(flywheel)
        newest = kept[-1]["label"] if kept else None
        kept_by = {}
        for k in kept:
            kept_by.setdefault(k["label"], []).append(k["iteration"])
        versions, references = [], []
        for row in board["rows"]:
            point = {k: row[k] for k in ("model", "rating", "ci_low", "ci_high", "rank", "battles")}
            order = version_order(row["model"])
            if order is None:
                references.append(point)
                continue
            m = _VERSIONED.match(row["model"])
            tag = row["model"].rsplit("@", 1)[1]
            point |= {
                "tag": tag,
                "iteration": None if m["base"] else int(m["it"] or m["legacy"]),  # type: ignore[index]
                "stage": m["stage"] or ("base" if m["base"] else None),  # type: ignore[index]
                "kept_after": kept_by.get(row["model"], []),
                "current": row["model"] == newest,
                "_order": order,
            }
            versions.append(point)
        versions.sort(key=lambda v: v.pop("_order"))
        references.sort(key=lambda r: -r["rating"])
        return {
            "flywheel": flywheel,
            "scope": scope["scope"],
            "label": scope["label"],
            "ci_level": board["ci_level"],
            "versions": versions,
            "references": references,
            "kept": kept,
        }

    def kept(self, flywheel: str) -> list[dict[str, Any]]:
        """Per finished round, oldest first: the version the flywheel kept — the promotion record's choice, else
        (rounds before promotion records) the model the next iteration started from."""
        from arena_ops import promotion
        from arena_ops.round import Round

        iterations = self.store.list_iterations(self._flywheel(flywheel))
        out = []
        for it in iterations:
            record = promotion.read(self.store, flywheel, it)
            if record and record.get("chosen"):
                pending = (record.get("approval") or {}).get("status") == "pending"
                out.append(
                    {
                        "iteration": it,
                        "label": record["chosen"]["label"],
                        "decision": record.get("decision"),
                        "pending": pending,
                    }  # fmt: skip
                )
            elif it + 1 in iterations and self.store.is_committed(layout.round_record(flywheel, it + 1)):
                start = Round.load(self.store, flywheel, it + 1).start
                if start is not None:
                    out.append({"iteration": it, "label": start.label, "decision": None, "pending": False})
        return out

    # Rounds --------------------------------------------------------------------------------------------------------

    def rounds(self, flywheel: str) -> list[dict[str, Any]]:
        """Per iteration, newest first: its battle runs (with their summaries) and the round report's DAG run."""
        out = []
        for it in reversed(self.store.list_iterations(self._flywheel(flywheel))):
            runs = []
            for t in self._battle_tables(flywheel, BattleFilter(iteration=it)):
                run, meta = t.run, t.meta
                runs.append(
                    {
                        "run": run,
                        "model": meta.get("target_label"),  # the target version that battled
                        "battles": meta.get("battles"),
                        "invalid": meta.get("invalid"),
                        "per_model": meta.get("per_model", {}),
                    }
                )
            report_key = layout.round_report(flywheel, it)
            report = (
                self.store.read_artifact_json(report_key, "report.json") if self.store.is_committed(report_key) else {}
            )
            from arena_ops import promotion

            promoted = promotion.read(self.store, flywheel, it) or report.get("promotion")  # an answer comes later
            if runs or report:
                out.append(
                    {
                        "iteration": it,
                        "runs": runs,
                        "target": (report.get("start") or {}).get("label") or report.get("target"),
                        "dag_run": report.get("dag_run"),
                        "training": report.get("training") or [],
                        "promotion": promoted,
                        "canary": report.get("canary"),
                        "ledger": self._ledger(flywheel, it) or report.get("ledger"),
                    }
                )
        return out

    def round_page(self, flywheel: str, iteration: int) -> dict[str, Any]:
        """What one round did, from its record, its report and the artifacts its tasks wrote (a running round's
        too): per step the slice, the model that battled, its battles (valid/invalid), the training rows and jobs
        per stage, the model each produced and its evaluation, wall seconds; the canary, the promotion and the
        ledger; every skip or failure the store knows, with its reason."""
        from arena_ops.flywheel import round_status
        from arena_ops.round import Round

        if not self.store.is_committed(layout.round_record(self._flywheel(flywheel), iteration)):
            raise NotFound(f"flywheel {flywheel!r} has no round record for iteration {iteration}")
        rnd = Round.load(self.store, flywheel, iteration)
        status = round_status(rnd, self.store)
        report_key = layout.round_report(flywheel, iteration)
        report = self.store.read_artifact_json(report_key, "report.json") if status["reported"] else {}
        walls = {r["entry"]: r.get("wall_s") for r in (status["ledger"] or {}).get("rows", []) if r["role"] == "task"}
        progress = self.progress(flywheel)
        rated = {v["model"]: v for v in progress["versions"]}
        testset = progress["scope"].removeprefix("eval-") if progress["scope"] else "mix"  # the board it is rated on
        problems: list[dict[str, str]] = []

        def evaluation(label: str | None) -> dict[str, Any] | None:
            if label is None:
                return None
            tag = label.rsplit("@", 1)[1]
            table = catalogue.eval_table(self.store, flywheel, testset, tag)
            return {
                "label": label,
                "battles": table.meta.get("battles") if table else None,
                "invalid": table.meta.get("invalid") if table else None,
                "rating": rated.get(label),
                "wall_s": walls.get(f"eval-{testset}-{tag}"),
            }

        steps = []
        for st, plan in zip(status["steps"], rnd.steps, strict=True):
            table = catalogue.step_table(self.store, flywheel, iteration, st["run"])
            meta = table.meta if table else {}
            data_key = layout.train_data_report(flywheel, iteration, st["stage"])
            data = self.store.read_artifact_json(data_key, "report.json") if self.store.is_committed(data_key) else {}
            stages = []
            for stage in plan.stages:
                job = self._job(flywheel, iteration, stage)
                produced = st["produced"][stage]
                if job.get("failed"):
                    problems.append({"where": f"{stage} job", "reason": job["failed"]})
                elif produced["reason"] and produced["reason"] != "not trained yet":
                    problems.append({"where": f"{stage}", "reason": f"no model: {produced['reason']}"})
                stages.append(
                    {
                        "stage": stage,
                        "rows": st["training_rows"].get(stage),
                        "produced": produced["label"],
                        "reason": produced["reason"],
                        "job": job,
                        "wall_s": walls.get(f"train-{stage}"),
                        "evaluation": evaluation(produced["label"]) if stage != "rm" else None,
                    }
                )
            steps.append(
                {
                    "step": st["stage"],
                    "slice": st["slice"],
                    "partition": st["partition"],
                    "run": st["run"],
                    "battled": st["battled_label"],
                    "battles": meta.get("battles"),
                    "invalid": meta.get("invalid"),
                    "per_model": meta.get("per_model", {}),
                    "wall_s": walls.get(f"battle-{st['run']}"),
                    "k": {k: data[k] for k in ("k_sft", "k_dpo") if k in data},
                    "stages": stages,
                }
            )
        data_sources = self._round_data(flywheel, rnd, problems)
        canary = status["canary"] or report.get("canary")  # the report keeps it where the canary's artifact is gone
        if canary and canary.get("breaches"):
            problems.append({"where": "judge canary", "reason": "gate breached: " + "; ".join(canary["breaches"])})
        for which, result in (report.get("evaluation") or {}).items():
            for ts, out in (result or {}).items() if isinstance(result, dict) else []:
                if isinstance(out, dict) and out.get("skipped"):
                    problems.append({"where": f"evaluation of {which} on {ts}", "reason": out["skipped"]})
        start = rnd.start.label if rnd.start else None
        return {
            "flywheel": flywheel,
            "iteration": iteration,
            "schedule": rnd.schedule,
            "resolved_at": rnd.resolved_at,
            "start": start,
            "start_evaluation": evaluation(start),
            "reported": status["reported"],
            "dag_run": report.get("dag_run") or rnd.dag_run,
            "steps": steps,
            "data": data_sources,
            "canary": canary,
            "promotion": status["promotion"],
            "ledger": status["ledger"],
            "problems": problems,
            "scope": progress["scope"],
        }

    def _round_data(self, flywheel: str, rnd: Any, problems: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Where the round's prompts came from, as the data step recorded it: each day's partition (data.mode
        partitioned) or the corpus — rows read, quarantined (a problem, with the table that holds them), removed by
        reason, kept."""
        from arena_ops.data.partitions import partition_name
        from arena_ops.data.pipeline import CLEAN, CORPUS

        out = []
        days = sorted({st.partition for st in rnd.steps if st.partition is not None})
        for ds in days:
            key = layout.dataset(flywheel, partition_name(ds))
            if self.store.is_committed(key):
                m = self.store.manifest(key).meta
                out.append(
                    {
                        "source": f"day {ds}",
                        "uri": self.store.key_uri(key),
                        "files": len(m.get("files", [])),
                        "read": m.get("rows_read"),
                        "quarantined": m.get("quarantined", 0),
                        "removed": m.get("removed", {}),
                        "kept": m.get("kept"),
                    }
                )
        corpus, cleaned = layout.dataset(flywheel, CORPUS), layout.dataset(flywheel, CLEAN)
        if not days and self.store.is_committed(corpus):
            m = self.store.manifest(corpus).meta
            c = self.store.manifest(cleaned).meta if self.store.is_committed(cleaned) else {}
            out.append(
                {
                    "source": "corpus",
                    "uri": self.store.key_uri(corpus),
                    "files": None,
                    "read": m.get("rows", 0) + m.get("quarantined", 0),
                    "quarantined": m.get("quarantined", 0),
                    "removed": {k: v for k, v in c.items() if k not in ("input", "kept") and v},
                    "kept": c.get("kept", m.get("rows")),
                }
            )
        for d in out:
            if d["quarantined"]:
                problems.append(
                    {
                        "where": f"data, {d['source']}",
                        "reason": f"{d['quarantined']} row(s) could not be read and were quarantined: "
                        f"{d['uri']}/quarantine.parquet names each file, row and reason",
                    }
                )
        return out

    def _job(self, flywheel: str, iteration: int, stage: str) -> dict[str, Any]:
        """A stage's training job as the store knows it: where it ran, its exit, its trained model's metrics."""
        from arena_ops.errors import TrainingError
        from arena_ops.training.run import TrainingJob, exit_status

        try:
            job = TrainingJob.load(self.store, flywheel, iteration, stage)
        except TrainingError:  # not submitted
            return {}
        out: dict[str, Any] = {"launcher": job.launcher, "ray_job_id": job.ray_job_id}
        if job.done is not None and job.done.get("skipped"):
            out["skipped"] = job.done["skipped"]
        elif (exited := exit_status(self.store, job)) is not None and exited[0] != 0:
            code, lines = exited
            tail = next((ln.strip() for ln in reversed(lines.splitlines()) if ln.strip()), "")
            out["failed"] = f"exit {code}" + (f": {tail[:300]}" if tail else "")
        model = layout.model(flywheel, iteration, stage)
        if self.store.is_committed(model):
            m = self.store.manifest(model).meta.get("metrics") or {}
            out["metrics"] = {k: m.get(k) for k in ("steps", "examples", "first_loss", "last_loss")}
        return out

    def _ledger(self, flywheel: str, iteration: int) -> dict[str, Any] | None:
        """The round's cost ledger as it stands (a running round's too), priced by the round's own config."""
        from arena_ops import ledger
        from arena_ops.round import Round

        if not self.store.is_committed(layout.round_record(flywheel, iteration)):
            return None
        try:
            cfg = Round.load(self.store, flywheel, iteration).cfg()
        except ArenaError:  # a record whose config no longer loads here: the report's copy, if any
            return None
        return ledger.summary(cfg, self.store, iteration)

    # Battles -------------------------------------------------------------------------------------------------------

    def _battle_tables(self, flywheel: str, f: BattleFilter) -> list[catalogue.BattleTable]:
        """Every battle table (the catalogue's): the rounds' steps, then the evaluations on test sets (run
        ``eval-{testset}``, filed under the iteration that evaluated)."""
        tables = catalogue.battle_tables(self.store, self._flywheel(flywheel), iteration=f.iteration, run=f.run)
        return sorted(tables, key=lambda t: (t.iteration, t.kind == "eval", t.run, t.key))

    def battles(self, flywheel: str, f: BattleFilter, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Battles matching ``f``, newest iteration first, with the total count for paging.

        Paging is pushed down to the Parquet read: matching reads only the three filter columns (the prompt filter
        adds ``prompt_id``), and the list columns are read only from the row groups that hold the requested page
        (``benchmarks/bench_ui.py``)."""
        matched: list[tuple[Any, str, pa.Array | None, int]] = []  # table, object, matching rows (None: all), count
        models: set[str] = set()
        runs: set[str] = set()
        columns = _DICT_COLUMNS + (["prompt_id"] if f.prompt else [])
        for entry in reversed(self._battle_tables(flywheel, f)):
            runs.add(entry.run)
            files = ["data.parquet"] + (["invalid.parquet"] if f.verdict in (None, "invalid") else [])
            for name in files:
                # Dictionary-encoded as written: a few distinct names, read and compared without decoding each row.
                obj = f"{entry.key}/{name}"
                self.store.verify(entry.key, name)  # once per version of the file; pages then read row groups
                table = catalogue.labelled(entry, self.store.read_table(obj, columns=columns, dictionary=_DICT_COLUMNS))
                for col in ("model_a", "model_b"):
                    models.update(pc.unique(table[col]).to_pylist())
                mask = _mask(table, f)
                if f.prompt and table.num_rows:
                    hit = self._prompt_mask(entry.key, table, f.prompt)
                    mask = pc.fill_null(hit if mask is None else pc.and_(mask, hit), False)
                rows = None if mask is None else pc.indices_nonzero(mask)
                count = table.num_rows if rows is None else len(rows)
                if count:
                    matched.append((entry, obj, rows, count))
        return {
            "flywheel": flywheel,
            "total": sum(m[3] for m in matched),
            "offset": offset,
            "limit": limit,
            "battles": self._page(matched, offset, limit),
            "models": sorted(m for m in models if m is not None),
            "runs": sorted(runs),
        }

    def _page(self, matched: list[tuple[Any, str, pa.Array | None, int]], offset: int, limit: int) -> list[dict]:
        """Rows ``offset`` … ``offset + limit`` of the matches end to end: only their row groups are read."""
        out: list[dict[str, Any]] = []
        skip = offset
        for entry, obj, rows, count in matched:
            if skip >= count:
                skip -= count
                continue
            take = min(limit - len(out), count - skip)
            wanted = list(range(skip, skip + take)) if rows is None else rows.slice(skip, take).to_pylist()
            out.extend(catalogue.labelled(entry, self.store.read_rows(obj, wanted, columns=_LIST_COLUMNS)).to_pylist())
            skip = 0
            if len(out) >= limit:
                break
        return out

    def _prompt_mask(self, key: str, table: pa.Table, needle: str) -> pa.ChunkedArray:
        hit = pc.match_substring(table["prompt_id"], needle, ignore_case=True)
        if self.store.exists(f"{key}/transcripts.parquet"):
            self.store.verify(key, "transcripts.parquet")
            tr = self.store.read_table(f"{key}/transcripts.parquet", columns=["prompt_id", "turns"])
            first = pc.list_element(tr["turns"], 0)
            ids = pc.filter(tr["prompt_id"], pc.match_substring(first, needle, ignore_case=True))
            hit = pc.or_(hit, pc.is_in(table["prompt_id"], value_set=pc.unique(ids)))
        return hit

    def battle(self, flywheel: str, iteration: int, run: str, battle_id: str) -> dict[str, Any]:
        """One battle: its record (both games' scores and explanations) and both conversations."""
        entries = self._battle_tables(flywheel, BattleFilter(iteration=iteration, run=run))
        if not entries:
            raise NotFound(f"flywheel {flywheel!r} has no battle run {run!r} in iteration {iteration}")
        record, key = None, entries[0].key
        for entry in entries:
            key = entry.key
            for name in ("data.parquet", "invalid.parquet"):
                table = catalogue.labelled(entry, self.store.read_artifact_table(key, name))
                rows = table.filter(pc.equal(table["battle_id"], battle_id)).to_pylist()
                if rows:
                    record = rows[0]
                    break
            if record is not None:
                break
        if record is None:
            raise NotFound(f"no battle {battle_id!r} in {flywheel} iteration {iteration}, run {run}")
        sides: dict[str, Any] = {"a": None, "b": None}
        if self.store.exists(f"{key}/transcripts.parquet"):
            tr = self.store.read_artifact_table(key, "transcripts.parquet")
            for row in tr.filter(pc.equal(tr["prompt_id"], record["prompt_id"])).to_pylist():
                for side in ("a", "b"):
                    if row["response_key"] == record[f"response_key_{side}"]:
                        sides[side] = row
        first = sides["a"] or sides["b"]
        return {
            "flywheel": flywheel,
            "record": record,
            "system": first["system"] if first else None,
            "turns": first["turns"] if first else None,
            "answers_a": sides["a"]["answers"] if sides["a"] else None,
            "answers_b": sides["b"]["answers"] if sides["b"] else None,
        }


def _mask(table: pa.Table, f: BattleFilter) -> pa.ChunkedArray | None:
    """Which rows match the model and verdict filters (None: no such filter, every row)."""
    a, b = table["model_a"], table["model_b"]
    masks = []
    if f.model_a and f.model_b:
        same = pc.and_(pc.equal(a, f.model_a), pc.equal(b, f.model_b))
        swapped = pc.and_(pc.equal(a, f.model_b), pc.equal(b, f.model_a))
        masks.append(pc.or_(same, swapped))
    elif f.model_a or f.model_b:
        m = f.model_a or f.model_b
        masks.append(pc.or_(pc.equal(a, m), pc.equal(b, m)))
    if f.verdict in VERDICTS:
        masks.append(pc.equal(table["winner"], f.verdict))
    elif f.verdict:  # a model name: the battles it won
        won_a = pc.and_(pc.equal(a, f.verdict), pc.equal(table["winner"], "model_a"))
        won_b = pc.and_(pc.equal(b, f.verdict), pc.equal(table["winner"], "model_b"))
        masks.append(pc.or_(won_a, won_b))
    if not masks:
        return None
    mask = masks[0]
    for m in masks[1:]:
        mask = pc.and_(mask, m)
    return pc.fill_null(mask, False)
