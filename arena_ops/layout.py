"""Where everything lives in the artifact store: the one module that builds store keys.

Glossary (one meaning per word):

- **iteration** — one turn of the flywheel (the paper's I0, I1, …), ``iter={i}``.
- **round** — the record and execution of one iteration: its config snapshot, start model, steps, evaluations.
- **slice** — one of the ``data.num_shards`` equal parts of the clean corpus (stored as ``data/shard-NNN``).
- **step** — one battle → training-data → train sequence of a round. The paper schedule has three (``sft``, ``dpo``,
  ``rl``), each on its own slice; the compact schedule has one (``all``).
- **stage** — one training job kind: ``sft``, ``dpo``, ``rm``, ``rl`` (see :mod:`arena_ops.training.stages_registry`).
- **run** — one battle run: a set of prompts every planned pair battles on (a step's slice, or a test set).

Layout::

    {flywheel}/data/{corpus,clean,decontam,shard-NNN,testset-*}/   iteration-independent datasets
    {flywheel}/iter={i}/round/round.json                          the Round record (written by resolve)
    {flywheel}/iter={i}/{responses,judgments}/{run}-{digest}/     resumable parts of a step's battle run
    {flywheel}/iter={i}/battles/{run}/                            a step's battle table
    {flywheel}/iter={i}/train-data/{stage}/, report-{step}/       training datasets, per-step data report
    {flywheel}/iter={i}/jobs/{stage}/                             a training job: spec, handle, status, log
    {flywheel}/iter={i}/model/{stage}/                            a trained model; its manifest is the registry entry
    {flywheel}/iter={i}/canary/judge/                             the judge's canary of the round
    {flywheel}/iter={i}/ledger/{entry}/                           the round's cost ledger, one entry per task
    {flywheel}/iter={i}/report/round/                             the round report
    {flywheel}/eval/{testset}/{responses,judgments}/eval-…/       evaluation parts (shared by every evaluated model)
    {flywheel}/eval/{testset}/battles/{tag}/                      one evaluated model's battles on that test set
    {flywheel}/leaderboard/[{scope}/]                             boards written by the Elo step

Evaluations live outside ``iter=*``: training never reads them and they never count as an iteration.
"""

from __future__ import annotations

from arena_ops.store import ArtifactStore

ROUND = "round"
RESPONSES, JUDGMENTS, BATTLES = "responses", "judgments", "battles"
TRAIN_DATA, JOBS, MODEL, REPORT = "train-data", "jobs", "model", "report"
CANARY = "canary"
LEDGER = "ledger"
EVAL = "eval"
EVAL_RUN_PREFIX = "eval-"  # the ``run`` of evaluation battles: ``eval-mix``


def iteration_base(flywheel: str, iteration: int) -> str:
    """The prefix under which a step's battle run writes its parts and table."""
    ArtifactStore.artifact_key(flywheel, iteration, ROUND, ROUND)  # validates the flywheel name and iteration
    return f"{flywheel}/iter={iteration}"


def round_record(flywheel: str, iteration: int) -> str:
    return f"{iteration_base(flywheel, iteration)}/{ROUND}"


def battles(flywheel: str, iteration: int, run: str) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, BATTLES, run)


def train_data(flywheel: str, iteration: int, stage: str) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, TRAIN_DATA, stage)


def train_data_report(flywheel: str, iteration: int, step: str) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, TRAIN_DATA, f"report-{step}")


def job(flywheel: str, iteration: int, stage: str) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, JOBS, stage)


def model(flywheel: str, iteration: int, stage: str) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, MODEL, stage)


def canary(flywheel: str, iteration: int) -> str:
    """The judge's canary of a round: its judgments, verdicts and metrics."""
    return ArtifactStore.artifact_key(flywheel, iteration, CANARY, "judge")


def ledger_base(flywheel: str, iteration: int) -> str:
    return f"{iteration_base(flywheel, iteration)}/{LEDGER}"


def ledger(flywheel: str, iteration: int, entry: str) -> str:
    """One entry of a round's cost ledger (:mod:`arena_ops.ledger`)."""
    return ArtifactStore.artifact_key(flywheel, iteration, LEDGER, entry)


def round_report(flywheel: str, iteration: int) -> str:
    return ArtifactStore.artifact_key(flywheel, iteration, REPORT, "round")


def eval_base(flywheel: str, testset: str) -> str:
    """``testset`` without its ``testset-`` prefix: ``mix``, ``diverse``, ``hard``."""
    ArtifactStore.dataset_key(flywheel, testset)  # validates both names
    return f"{flywheel}/{EVAL}/{testset}"


def eval_battles(flywheel: str, testset: str, tag: str) -> str:
    ArtifactStore.dataset_key(flywheel, tag)
    return f"{eval_base(flywheel, testset)}/{BATTLES}/{tag}"


def eval_run(testset: str) -> str:
    return EVAL_RUN_PREFIX + testset


def dataset(flywheel: str, name: str) -> str:
    """An iteration-independent dataset: ``corpus``, ``clean``, ``decontam``, ``shard-NNN``, ``testset-*``."""
    return ArtifactStore.dataset_key(flywheel, name)


def testset(flywheel: str, name: str) -> str:
    """``name``: ``mix``, ``diverse`` or ``hard``."""
    return ArtifactStore.dataset_key(flywheel, f"testset-{name}")


def shard(flywheel: str, k: int) -> str:
    return ArtifactStore.dataset_key(flywheel, shard_name(k))


def shard_name(k: int) -> str:
    return f"shard-{k:03d}"


def leaderboard(flywheel: str, scope: str | None = None) -> str:
    return f"{flywheel}/leaderboard" + (f"/{scope}" if scope and scope != "all" else "")
