"""Rate a set of models on WizardArena (manual): one DAG per benchmark a flywheel config of ``$ARENA_FLYWHEELS``
declares under ``benchmarks`` (``arena_bench__<flywheel>__<benchmark>``). Triggered from the UI, its parameters
change the models or the pairing; what was battled before (same answers, same judge) is reused by content key, so
adding a model battles only its pairs. The boards land in the flywheel's leaderboard folder as ``bench-<name>``
(the Arena view lists them). The same as ``arena bench run <name>``."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from arena_ops.config import BenchmarkConfig
from arena_ops.flywheels import Flywheel

from _arena_common import dag_id, default_args, flywheels, start_date

BASE = "arena_bench"


def bench_dag(fw: Flywheel, bench: BenchmarkConfig) -> DAG:
    cfg = fw.cfg
    assert cfg is not None
    config_path = str(fw.path)
    source = f"test set {bench.testset}" if bench.testset else f"prompts {bench.prompts}"

    with DAG(
        dag_id=f"{dag_id(BASE, fw)}__{bench.name.replace('-', '_')}",
        description=f"Benchmark {bench.name!r} of flywheel {cfg.flywheel!r}: {len(bench.models)} models on {source}",
        schedule=None,
        start_date=start_date(cfg),
        catchup=False,
        max_active_runs=1,  # two runs of one benchmark would battle the same pairs twice
        default_args=default_args(cfg),
        tags=["arena", "benchmark", f"flywheel:{cfg.flywheel}"],
        params={
            "models": Param(
                ",".join(bench.models), type="string", description="Comma-separated model names of the config."
            ),
            "pairing": Param(bench.pairing, type="string", enum=["all", "budget", "anchor"]),
            "pairs_per_prompt": Param(bench.pairs_per_prompt, type=["null", "integer"], minimum=1),
        },
    ) as dag:

        @task
        def battle_and_rate(params: dict | None = None) -> dict:
            from arena_ops.bench import BenchRequest, run_bench
            from arena_ops.config import load_config

            c = load_config(config_path)
            models = [m.strip() for m in params["models"].split(",") if m.strip()]
            req = BenchRequest.declared(
                c, bench.name, models=models, pairing=params["pairing"], pairs_per_prompt=params["pairs_per_prompt"]
            )
            summary = run_bench(c, req)
            keep = ("name", "models", "battles", "invalid", "last_run", "scopes", "board")
            return {k: summary[k] for k in keep}

        battle_and_rate()
    return dag


for _fw in flywheels():
    if _fw.cfg is not None:
        for _bench in _fw.cfg.benchmarks:
            _dag = bench_dag(_fw, _bench)
            globals()[_dag.dag_id] = _dag
