"""The Round: one flywheel iteration, resolved once and written to the store; every later task reads it.

``resolve`` fixes, for iteration ``i``: a snapshot of the config (so a task never re-reads a config path that may
have changed since), the model the round starts from, and the step plan. Under the paper schedule
(``training.schedule: paper``) the steps are::

    sft  slice 3i      the start model battles   → SFT data → SFT-Ii
    dpo  slice 3i+1    SFT-Ii battles            → DPO pairs (accumulated over iterations) → DPO-Ii
    rl   slice 3i+2    DPO-Ii battles            → reward-model pairs + RL prompts (accumulated) → RM-Ii, RL-Ii

(``slices_per_iteration`` generalises the 3). The compact schedule has one step, ``all``, on slice ``i mod N``,
whose battles feed every stage. Which model battles in a step is not known at resolve time — it is the round's
*current policy* when the step starts (the newest policy trained earlier in the round, else the start model) —
so it is derived from the store and recorded in the step's battle table.

The next iteration starts from the policy of this iteration that beats its start model on the Mix board with the
configured confidence (``training.promotion``, :mod:`arena_ops.promotion`), else from the same start model; or from
its last policy (``training.next_from: last``).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from arena_ops import layout
from arena_ops.config import ArenaConfig, StorageConfig, load_config
from arena_ops.errors import ConfigError, RoundStartedError, SlicesExhaustedError
from arena_ops.store import ArtifactStore
from arena_ops.training.stage_registry import STAGES, with_needs

log = logging.getLogger(__name__)

PAPER_STEPS = (("sft", ("sft",)), ("dpo", ("dpo",)), ("rl", ("rm", "rl")))


class ModelRef(BaseModel):
    """A model a round serves: its weights and its label on the boards (``tiny-target@i0-sft``)."""

    model_config = ConfigDict(frozen=True)

    uri: str
    label: str

    @property
    def tag(self) -> str:
        """The part after ``@``: ``base``, ``i0-sft`` — also the name of its evaluation battle table."""
        return self.label.rsplit("@", 1)[1]


class Step(BaseModel):
    name: str  # sft | dpo | rl (paper), all (compact)
    slice: int  # the corpus slice it battles on (``data/shard-NNN``), or the slice of its day's partition
    stages: list[str]  # trained from its battles, in order
    partition: str | None = None  # data.mode partitioned: the day (YYYY-MM-DD) whose slice it battles on

    @property
    def run(self) -> str:
        if self.partition is not None:
            return f"{self.name}-ds={self.partition}-{self.slice}"
        return f"{self.name}-{layout.shard_name(self.slice)}"


class Round(BaseModel):
    """One iteration's record, stored at ``{flywheel}/iter={i}/round/round.json``."""

    model_config = ConfigDict(extra="forbid")

    flywheel: str
    iteration: int
    schedule: str
    config: dict[str, Any] = Field(description="The resolved config snapshot every task of the round uses.")
    start: ModelRef | None = Field(description="The model the round starts from; None when the target is not served.")
    steps: list[Step]
    evaluation: list[str] = Field(description="Test sets each new policy is rated on (present ones only).")
    resolved_at: str = ""
    dag_run: dict[str, str] | None = Field(
        None, description="The Airflow DAG run that resolved the round (dag_id, run_id): the Arena view links to it."
    )

    # Access -------------------------------------------------------------------------------------------------------

    def cfg(self) -> ArenaConfig:
        return ArenaConfig.model_validate(self.config)

    def store(self) -> ArtifactStore:
        return ArtifactStore.from_config(self.cfg().storage)

    def ref(self) -> dict[str, Any]:
        """What a task passes on (XCom): enough to find the record again, nothing else."""
        return {"storage": self.config["storage"], "flywheel": self.flywheel, "iteration": self.iteration}

    @property
    def stages(self) -> list[str]:
        return [s for step in self.steps for s in step.stages]

    def step_of(self, stage: str) -> Step | None:
        return next((st for st in self.steps if stage in st.stages), None)

    def label(self, iteration: int, stage: str) -> str:
        return f"{self.config['models']['target']['name']}@i{iteration}-{stage}"

    # Store --------------------------------------------------------------------------------------------------------

    def save(self, store: ArtifactStore) -> None:
        with store.artifact_at(
            layout.round_record(self.flywheel, self.iteration), meta={"iteration": self.iteration}
        ) as w:
            w.write_json("round.json", self.model_dump(mode="json"))

    @classmethod
    def load(cls, store: ArtifactStore, flywheel: str, iteration: int) -> Round:
        prefix = layout.round_record(flywheel, iteration)
        if not store.is_committed(prefix):
            raise ConfigError(
                f"no round record for {flywheel} iteration {iteration} at {store.key_uri(prefix)}: "
                "resolve the round first (`arena round run` or the DAG's resolve task)"
            )
        return cls.model_validate(store.read_artifact_json(prefix, "round.json"))

    @classmethod
    def from_ref(cls, ref: dict[str, Any]) -> Round:
        store = ArtifactStore.from_config(StorageConfig.model_validate(ref["storage"]))
        return cls.load(store, ref["flywheel"], int(ref["iteration"]))

    # Models -------------------------------------------------------------------------------------------------------

    def produced(self, store: ArtifactStore, stage: str) -> ModelRef | None:
        """The model ``stage`` produced in this round, if it was trained."""
        prefix = layout.model(self.flywheel, self.iteration, stage)
        if not store.is_committed(prefix):
            return None
        return ModelRef(uri=store.key_uri(prefix), label=self.label(self.iteration, stage))

    def current_policy(self, store: ArtifactStore, before_stage: str) -> ModelRef | None:
        """The newest policy trained in this round by a stage planned before ``before_stage``, else the start."""
        order = self.stages
        earlier = order[: order.index(before_stage)] if before_stage in order else order
        for s in reversed(earlier):
            if STAGES[s].policy and (m := self.produced(store, s)) is not None:
                return m
        return self.start

    def battled_model(self, store: ArtifactStore, step: Step) -> ModelRef | None:
        return self.current_policy(store, step.stages[0]) if step.stages else self.start

    def policies(self, store: ArtifactStore) -> list[ModelRef]:
        return [m for s in self.stages if STAGES[s].policy and (m := self.produced(store, s)) is not None]


# Resolution --------------------------------------------------------------------------------------------------------


def iteration_for(cfg: ArenaConfig, store: ArtifactStore, param: int | None, logical_date: datetime | None) -> int:
    """The iteration of a run: its ``iteration`` param; else its logical date — whole days since
    ``airflow.start_date`` (a nightly schedule runs iteration n on day n; a backfill re-runs exactly those); else, for
    a manual run, the newest round without a report (resume it) or one past the newest reported round."""
    if param is not None:
        return int(param)
    if logical_date is not None:
        start = date.fromisoformat(cfg.airflow.start_date)
        days = (logical_date.date() - start).days
        if days < 0:
            raise ConfigError(f"logical date {logical_date.date()} is before airflow.start_date {start}")
        return days
    rounds = [
        i for i in store.list_iterations(cfg.flywheel) if store.is_committed(layout.round_record(cfg.flywheel, i))
    ]
    if not rounds:
        return 0
    last = rounds[-1]
    return last if not store.is_committed(layout.round_report(cfg.flywheel, last)) else last + 1


def day_of(cfg: ArenaConfig, iteration: int) -> str:
    """Under data.mode partitioned, iteration ``i`` is day ``airflow.start_date + i`` (what its logical date names)."""
    return (date.fromisoformat(cfg.airflow.start_date) + timedelta(days=iteration)).isoformat()


def prepare_day(cfg: ArenaConfig, store: ArtifactStore, ds: str) -> dict[str, Any]:
    """Day ``ds``'s partition (data.mode partitioned), prepared unless it is already; its data report. Once the
    day's round has battled, the partition is kept as it is. Raises PartitionUnavailableError for a day to skip."""
    from arena_ops.data.partitions import check_ds, ensure_partition

    ds = check_ds(ds)
    days = (date.fromisoformat(ds) - date.fromisoformat(cfg.airflow.start_date)).days
    prefix = layout.round_record(cfg.flywheel, days)
    begun = days >= 0 and store.is_committed(prefix) and started(Round.load(store, cfg.flywheel, days), store)
    return ensure_partition(cfg, store, ds, started=begun)


def plan_steps(cfg: ArenaConfig, iteration: int, policies: list[str] | None = None) -> list[Step]:
    wanted = with_needs(list(cfg.training.stages) if policies is None else policies)
    n = cfg.data.num_shards
    day = day_of(cfg, iteration) if cfg.data.mode == "partitioned" else None
    if cfg.training.schedule == "compact":
        return [Step(name="all", slice=0 if day else iteration % n, stages=wanted, partition=day)]
    spi = cfg.training.slices_per_iteration
    first = 0 if day else iteration * spi
    if not day and first + spi > n:
        raise SlicesExhaustedError(
            f"iteration {iteration} needs slices {first}…{first + spi - 1} under the paper schedule, but "
            f"data.num_shards is {n} (enough for {n // spi} iterations): add data and raise data.num_shards, or use "
            "training.schedule: compact"
        )
    steps = []
    for k, (name, stages) in enumerate(PAPER_STEPS[:spi]):
        planned = [s for s in stages if s in wanted]
        if planned:
            steps.append(Step(name=name, slice=first + k, stages=planned, partition=day))
    return steps


def resolve(
    config_path: str,
    iteration: int | None = None,
    policies: list[str] | None = None,
    competitors: list[str] | None = None,
    sample_limit: int | None = None,
    logical_date: datetime | None = None,
    overrides: dict[str, Any] | None = None,
    dag_run: dict[str, str] | None = None,
) -> Round:
    """Resolve iteration, start model, steps and the config snapshot; write the record (idempotent). ``dag_run``:
    the Airflow DAG run resolving it (kept from the first resolve)."""
    extra: dict[str, Any] = dict(overrides or {})
    if sample_limit is not None:
        extra["battle.sample_limit"] = sample_limit
    cfg = load_config(config_path, extra)
    if competitors:
        known = {c.name for c in cfg.models.competitors}
        unknown = sorted(set(competitors) - known)
        if unknown:
            raise ConfigError(f"competitor override {unknown}: not in models.competitors {sorted(known)}")
        cfg.models.competitors = [c for c in cfg.models.competitors if c.name in competitors]
    store = ArtifactStore.from_config(cfg.storage)
    it = iteration_for(cfg, store, iteration, logical_date)
    prefix = layout.round_record(cfg.flywheel, it)
    if cfg.data.mode == "partitioned":  # the day's data first: a day without enough of it is skipped, unrecorded
        prepare_day(cfg, store, day_of(cfg, it))
    rnd = Round(
        flywheel=cfg.flywheel,
        iteration=it,
        schedule=cfg.training.schedule,
        config=snapshot(cfg),
        start=start_model(cfg, store, it),
        steps=plan_steps(cfg, it, policies),
        evaluation=["mix"],
        dag_run=dag_run,
    )
    if store.is_committed(prefix):
        old = Round.model_validate(store.read_artifact_json(prefix, "round.json"))
        begun = started(old, store)
        # The start model is chosen once: a started round keeps it even where later evaluations would now rank
        # another candidate first (they change the joint fit, not what this round has already battled with).
        fixed = {"resolved_at", "dag_run", "start"} if begun else {"resolved_at", "dag_run"}
        if old.model_dump(exclude=fixed) == rnd.model_dump(exclude=fixed):
            return old  # a retried resolve, or a rerun: the same round
        if begun:
            raise RoundStartedError(
                f"{cfg.flywheel} iteration {it} has started ({store.key_uri(prefix)}) and its record is written once: "
                f"it differs from this resolve in {', '.join(_differences(old, rnd))}. Run a new iteration "
                "(`iteration` param / --iteration), or give the changed config a new flywheel name"
            )
        log.info("iteration %d had not started: its record is resolved anew", it)
    rnd.resolved_at = datetime.now(UTC).isoformat(timespec="seconds")
    rnd.save(store)
    return rnd


def started(rnd: Round, store: ArtifactStore) -> bool:
    """Whether any step of the round has written anything: its data, battles, jobs, models or report. The
    evaluation of the start model does not count (it is filed outside the iteration and keyed by content)."""
    base = layout.iteration_base(rnd.flywheel, rnd.iteration)
    written = {k.rstrip("/").rsplit("/", 1)[-1] for k in store.list(base)}
    return bool(written - {layout.ROUND})


def _differences(old: Round, new: Round) -> list[str]:
    """Dotted keys where two records differ (the config snapshot key by key), for the refusal message."""
    a, b = old.model_dump(exclude={"resolved_at", "start"}), new.model_dump(exclude={"resolved_at", "start"})
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{where}.{k}" if where else str(k))
        elif x != y:
            out.append(where or "the record")

    walk(a, b, "")
    return [o.removeprefix("config.") for o in out[:8]] + (["…"] if len(out) > 8 else [])


def snapshot(cfg: ArenaConfig) -> dict[str, Any]:
    """The config as a Round record keeps it: the settings the file (and overrides) state, defaults left out. Loaded
    back it is the same config, and it builds the same Serve applications as the file does (they pass engine
    settings as stated — as the Helm chart renders them — so a snapshot with every field set would restart every
    engine at each round's first battle: measured 66 s)."""
    data = cfg.model_dump(mode="json", exclude_unset=True)
    # Paths resolved at load time against the config file's directory stay resolved, defaults or not.
    data.setdefault("storage", {})["root"] = cfg.storage.root
    data.setdefault("stack", {})["dir"] = cfg.stack.dir
    return data


def start_model(cfg: ArenaConfig, store: ArtifactStore, iteration: int) -> ModelRef | None:
    """Iteration 0: the start model ``arena train init`` trained, else the configured weights. Later: what the previous
    round's promotion record chose (:mod:`arena_ops.promotion`: a policy only when it beats that round's start with
    the configured confidence), decided now when the record is missing; without a previous round record, the newest
    registered policy."""
    from arena_ops.training.run import base_weights, registry

    name = cfg.models.target.name
    base = base_weights(cfg)
    if not base:
        return None  # recorded/external target: nothing is trained or served
    base_ref = ModelRef(uri=base, label=f"{name}@base")
    if iteration == 0:
        from arena_ops.training.init import start_model_uri

        trained = start_model_uri(cfg, store)  # `arena train init`: SFT on data.init_sources before iteration 0
        return ModelRef(uri=trained, label=f"{name}@i0-init") if trained else base_ref
    prev_key = layout.round_record(cfg.flywheel, iteration - 1)
    if not store.is_committed(prev_key):
        policies = [e for e in registry(cfg, store) if e["iteration"] < iteration and STAGES[e["stage"]].policy]
        if not policies:
            return base_ref
        e = policies[-1]
        return ModelRef(uri=e["model_uri"], label=f"{name}@i{e['iteration']}-{e['stage']}")
    from arena_ops import promotion

    recorded = promotion.read(store, cfg.flywheel, iteration - 1)  # decided by the previous round's report
    if promotion.pending(recorded):
        raise promotion.PromotionPendingError(
            f"iteration {iteration} of {cfg.flywheel} cannot start: iteration {iteration - 1}'s promotion waits for "
            f"approval (proposed: {recorded['approval']['proposed']} — {recorded['reason']}). Answer the "
            f"promotion_review task of its round DAG run in the Airflow UI, or run `arena round approve "
            f"{iteration - 1} --promote` (or `--keep`)."
        )
    if recorded is not None:
        return ModelRef(**recorded["chosen"])
    prev = Round.model_validate(store.read_artifact_json(prev_key, "round.json"))
    if prev.start is None:
        policies = prev.policies(store)
        return policies[-1] if policies else base_ref
    return ModelRef(**promotion.decide(cfg, store, iteration - 1, prev.start, prev.policies(store))["chosen"])
