"""Build the WizardArena test sets (Diverse, Hard, Mix) and re-cut the training shards without them (manual), one DAG
per flywheel of ``$ARENA_FLYWHEELS`` (``arena_testset_build__<flywheel>``), on that flywheel's config. A flywheel on
date partitions builds them from ``data.testset_sources``; its days are decontaminated as they are prepared."""

from __future__ import annotations

from airflow.sdk import DAG, task

from arena_ops.flywheels import Flywheel

from _arena_common import dag_id, default_args, flywheels, start_date

BASE = "arena_testset_build"


def testset_dag(fw: Flywheel) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    config_path = str(fw.path)

    with DAG(
        dag_id=dag_id(BASE, fw),
        description=f"WizardArena test sets of flywheel {cfg.flywheel!r}",
        schedule=None,
        start_date=start_date(cfg),
        catchup=False,
        default_args=default_args(cfg),
        tags=["arena", f"flywheel:{cfg.flywheel}"],
    ) as dag:

        @task
        def corpus() -> dict:
            from arena_ops.config import load_config
            from arena_ops.data.pipeline import ensure_clean
            from arena_ops.store import ArtifactStore

            c = load_config(config_path)
            ensure_clean(c, ArtifactStore.from_config(c.storage))
            return {"flywheel": c.flywheel}

        @task
        def serve_judge(_c: dict) -> str:
            from arena_ops.config import load_config
            from arena_ops.serving.deploy import up

            return up(load_config(config_path))

        @task
        def testsets(_endpoint: str) -> dict:
            from arena_ops.config import load_config
            from arena_ops.data.pipeline import testset_stage
            from arena_ops.store import ArtifactStore

            c = load_config(config_path)
            return testset_stage(c, ArtifactStore.from_config(c.storage))

        @task
        def reshard(_t: dict) -> dict:
            from arena_ops.config import load_config
            from arena_ops.data.pipeline import ensure_shards
            from arena_ops.store import ArtifactStore

            c = load_config(config_path)
            return {"shards": len(ensure_shards(c, ArtifactStore.from_config(c.storage)))}

        built = testsets(serve_judge(corpus()))
        if cfg.data.mode == "corpus":  # partitioned flywheels cut each day as it arrives (arena_ingest__<flywheel>)
            reshard(built)
    return dag


for _fw in flywheels():
    if _fw.cfg is not None:
        _dag = testset_dag(_fw)
        globals()[_dag.dag_id] = _dag
