"""`make demo`: one complete flywheel round on the embedded default, then the Elo DAG, then the leaderboard.

SQLite Airflow (``dag.test()``, no scheduler needed), a local Ray head with vLLM's CPU build, the Gemma 3 270M demo
model, MT-Bench + Self-Instruct prompts and a local-directory artifact store. Runs the real DAGs of ``dags/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from airflow.utils import db
db.initdb() if hasattr(db, "initdb") else db.resetdb()
import importlib
mod = importlib.import_module(sys.argv[2])
run = mod.dag.test(run_conf=json.loads(sys.argv[3]))
print("RESULT " + json.dumps({"state": str(run.state)}))
"""


def run_dag(dag_module: str, conf: dict, env: dict[str, str], log_dir: Path) -> None:
    t0 = time.perf_counter()
    log_file = log_dir / f"{dag_module}.log"
    print(f"== {dag_module} {json.dumps(conf)} (task logs: {log_file})", flush=True)
    with open(log_file, "w") as log:
        res = subprocess.run(
            [sys.executable, "-c", RUN, str(REPO / "dags"), dag_module, json.dumps(conf)],
            env=env,
            cwd=REPO,
            text=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    text = log_file.read_text(errors="replace")
    lines = [x for x in text.splitlines() if x.startswith("RESULT ")]
    state = json.loads(lines[-1][7:])["state"] if lines else "crashed"
    print(f"== {dag_module}: {state} in {time.perf_counter() - t0:.0f}s", flush=True)
    if res.returncode != 0 or state != "success":
        start = text.find("Traceback")
        sys.stderr.write(text[start : start + 6000] if start >= 0 else text[-6000:])
        sys.exit(f"{dag_module} failed; full log: {log_file}")


def main() -> None:
    config = os.environ.get("ARENA_CONFIG", str(REPO / "configs" / "demo.yaml"))
    airflow_home = REPO / ".arena" / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ARENA_CONFIG": config,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "PYTHONPATH": str(REPO),
    }
    from arena_ops import layout
    from arena_ops.config import load_config
    from arena_ops.round import iteration_for
    from arena_ops.store import ArtifactStore

    cfg = load_config(config)
    store = ArtifactStore.from_config(cfg.storage)
    iteration = iteration_for(cfg, store, None, None)  # the next round of this flywheel
    start = time.perf_counter()
    try:
        run_dag("arena_flywheel_round", {"config_path": config, "iteration": iteration}, env, airflow_home)
        run_dag("arena_elo", {}, env, airflow_home)  # dag.test() does not fire Asset-scheduled DAGs: run it explicitly
    finally:
        subprocess.run(
            [sys.executable, "-m", "arena_ops.cli", "--config", config, "serve", "down"], env=env, capture_output=True
        )
    board = store.get_bytes(f"{cfg.flywheel}/leaderboard/leaderboard.md").decode()
    print(f"\nLeaderboard of flywheel {cfg.flywheel!r} after round {iteration}:\n\n{board}")
    print(f"Plots: {store.key_uri(cfg.flywheel + '/leaderboard')}/elo_ci.png and win_rate_heatmap.png")
    print(f"Round report: {store.key_uri(layout.round_report(cfg.flywheel, iteration))}/report.md")
    # `airflow standalone` starts its components by name from PATH: the command puts this environment's bin first,
    # so that it works from a fresh shell without an activated virtualenv.
    print(
        f"Demo took {time.perf_counter() - start:.0f}s. Airflow UI on the demo's database: "
        f"PATH={Path(sys.executable).parent}:$PATH AIRFLOW_HOME={airflow_home} "
        f"AIRFLOW__CORE__DAGS_FOLDER={REPO / 'dags'} AIRFLOW__CORE__PLUGINS_FOLDER={REPO / 'plugins'} "
        f"ARENA_CONFIG={config} airflow standalone  (the leaderboard is under Browse → Arena). The scheduled "
        "service on PostgreSQL, S3 and two Ray nodes: `make up`."
    )


if __name__ == "__main__":
    main()
