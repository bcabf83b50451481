"""Build the WizardArena test sets (Diverse, Hard, Mix) and re-cut the training shards without them (manual)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from _arena_common import CONFIG_PATH, config, default_args

CFG = config()

with DAG(
    dag_id="arena_testset_build",
    schedule=None,
    start_date=pendulum.parse(CFG.airflow.start_date),
    catchup=False,
    default_args=default_args(CFG),
    tags=["arena"],
    params={"config_path": Param(CONFIG_PATH, type="string")},
) as dag:

    @task
    def corpus(params: dict | None = None) -> dict:
        from arena_ops.config import load_config
        from arena_ops.data.pipeline import ensure_clean
        from arena_ops.store import ArtifactStore

        cfg = load_config(params["config_path"])
        ensure_clean(cfg, ArtifactStore.from_config(cfg.storage))
        return {"flywheel": cfg.flywheel}

    @task
    def serve_judge(_c: dict, params: dict | None = None) -> str:
        from arena_ops.config import load_config
        from arena_ops.serving.deploy import up

        return up(load_config(params["config_path"]))

    @task
    def testsets(_endpoint: str, params: dict | None = None) -> dict:
        from arena_ops.config import load_config
        from arena_ops.data.pipeline import testset_stage
        from arena_ops.store import ArtifactStore

        cfg = load_config(params["config_path"])
        return testset_stage(cfg, ArtifactStore.from_config(cfg.storage))

    @task
    def reshard(_t: dict, params: dict | None = None) -> dict:
        from arena_ops.config import load_config
        from arena_ops.data.pipeline import ensure_shards
        from arena_ops.store import ArtifactStore

        cfg = load_config(params["config_path"])
        return {"shards": len(ensure_shards(cfg, ArtifactStore.from_config(cfg.storage)))}

    reshard(testsets(serve_judge(corpus())))
