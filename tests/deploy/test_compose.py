"""The compose stack for real: `make images` (docker/images.sh), then `up` with docker/compose.local.yaml on this
kind of machine (no registry: local stand-ins for PostgreSQL and MinIO), all services healthy, one round of
docker/flywheel.compose.yaml triggered through Airflow's REST API, its battle table and the leaderboard read from
the stack's bucket, the Arena view opened in Chromium, `down -v`, and nothing of the project left running.

Marked ``docker``: `make test` leaves it out (building the images takes longer than CI allows); `make test-docker`
runs it. Skipped with the reason when no Docker engine answers and none can be started (that needs root).
ARENA_COMPOSE_KEEP=1 leaves the stack up for debugging and prints the command that takes it down."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from arena_ops.airflow.api import AirflowAPI
from arena_ops.config import load_config
from arena_ops.store import ArtifactStore
from tests.deploy.images import LAUNCH, built_images, kind

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
ARENA_SOCK = "/run/arena-docker/docker.sock"  # where docker/images.sh starts an engine when none runs
ROUND, ELO = "arena_flywheel_round__compose", "arena_elo__compose"  # from the mounted flywheel folder
# The host ports compose.yaml publishes.
PORTS = [8080, 8265, 8000, 10001, 9000, 9001]
ARTIFACTS = Path(os.environ.get("ARENA_TEST_ARTIFACTS", REPO / ".arena" / "test-artifacts"))


def docker(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check)


def inspect(env: dict[str, str], cid: str) -> dict:
    return json.loads(docker(env, "inspect", cid, check=True).stdout)[0]


def _answers(env: dict[str, str]) -> bool:
    return bool(shutil.which("docker")) and docker(env, "info").returncode == 0


def docker_env() -> dict[str, str]:
    """An environment whose `docker` reaches an engine: the caller's, the one docker/images.sh starts, or (as root)
    the one it will start."""
    env = dict(os.environ)
    if _answers(env):
        return env
    env["DOCKER_HOST"] = f"unix://{ARENA_SOCK}"
    if Path(ARENA_SOCK).exists() and _answers(env):
        return env
    if os.geteuid() != 0:
        pytest.skip("no Docker engine answers `docker info`, and starting one (docker/images.sh) needs root")
    if not (shutil.which("dockerd") or shutil.which("apt-get")):
        pytest.skip("no Docker engine answers `docker info`, and there is neither dockerd nor apt-get to get one")
    return env


def compose_cmd(env: dict[str, str]) -> list[str]:
    if shutil.which("docker") and docker(env, "compose", "version").returncode == 0:
        return ["docker", "compose"]
    if not shutil.which("docker-compose"):
        if os.geteuid() != 0:
            pytest.skip("neither `docker compose` nor `docker-compose` is installed")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"], check=True)
    return ["docker-compose"]


def _taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Compose:
    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env, self.root = env, root
        self.project = f"arena-test-{secrets.token_hex(3)}"
        self.env_file = root / ".env"
        example = (DOCKER / ".env.example").read_text()
        values = {
            "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
            "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(16),
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        }
        lines = []
        for line in example.splitlines():
            key = line.partition("=")[0]
            lines.append(f"{key}={values[key]}" if key in values else line)
        self.env_file.write_text("\n".join(lines) + "\n")
        self.settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
        self.base = [
            *compose_cmd(env),
            "-p",
            self.project,
            "-f",
            str(DOCKER / "compose.yaml"),
            "-f",
            str(DOCKER / "compose.local.yaml"),
            "--env-file",
            str(self.env_file),
        ]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert res.returncode == 0, f"compose {' '.join(args)}: {res.stdout[-3000:]}\n{res.stderr[-5000:]}"
        return res

    def containers(self, all_: bool = True) -> list[str]:
        flags = ["-a"] if all_ else []
        out = subprocess.run(
            ["docker", "ps", *flags, "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()

    def health(self) -> dict[str, str]:
        """Service → health (or state, for services without a healthcheck)."""
        out = {}
        for cid in self.containers():
            info = inspect(self.env, cid)
            state = info["State"]
            out[info["Config"]["Labels"]["com.docker.compose.service"]] = (state.get("Health") or {}).get(
                "Status", state["Status"] + (f":{state['ExitCode']}" if state["Status"] == "exited" else "")
            )
        return out

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", "--tail", "80", service, check=False).stdout


def wait_healthy(c: Compose, timeout_s: float) -> dict[str, str]:
    long_running = {
        "postgres",
        "minio",
        "ray-head",
        "ray-worker",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    done = {"minio-init": "exited:0", "airflow-init": "exited:0"}
    deadline, health = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        health = c.health()
        failed = [s for s, h in health.items() if h.startswith("exited:") and h != "exited:0" or h == "unhealthy"]
        assert not failed, f"{failed} failed: {health}\n" + "\n".join(c.logs(s) for s in failed)
        ready = all(health.get(s) in ("healthy", "running") for s in long_running - {"ray-worker"})
        if ready and health.get("ray-worker") == "running" and all(health.get(s) == v for s, v in done.items()):
            return health
        time.sleep(5)
    raise AssertionError(f"not healthy after {timeout_s:.0f} s: {health}")


def take_down(c: Compose, times: dict[str, float]) -> None:
    t0 = time.monotonic()
    down = c("down", "-v", "--remove-orphans", timeout=600, check=False)
    times["down"] = time.monotonic() - t0
    print("compose timings (s):", {k: round(v) for k, v in times.items()})
    assert down.returncode == 0, down.stderr[-3000:]
    assert c.containers() == [], "containers of the project are left after `down -v`"
    volumes = docker(c.env, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={c.project}").stdout
    volumes = volumes.split()
    assert volumes == [], f"volumes left after `down -v`: {volumes}"
    networks = docker(c.env, "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={c.project}")
    assert networks.stdout.split() == [], f"networks left after `down -v`: {networks.stdout}"
    assert not any(_taken(p) for p in PORTS), "a port of the stack still answers after `down -v`"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Compose, dict[str, float]]]:
    env = docker_env()
    taken = [p for p in PORTS if _taken(p)]
    assert not taken, f"compose.yaml publishes ports {taken}, which are taken here"
    times: dict[str, float] = {}
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(DOCKER / "images.sh")], env=env, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, f"docker/images.sh: {res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    times["images"] = time.monotonic() - t0
    c = Compose(env, tmp_path_factory.mktemp("compose"))
    try:
        t0 = time.monotonic()
        up = c("up", "-d", timeout=900, check=False)
        assert up.returncode == 0, f"compose up: {up.stderr[-3000:]}\n" + "\n".join(
            f"--- {s} ---\n{c.logs(s)}" for s in c.health()
        )
        wait_healthy(c, timeout_s=900)
        times["up"] = time.monotonic() - t0
        yield c, times
    finally:
        if os.environ.get("ARENA_COMPOSE_KEEP"):  # for debugging: leave the stack up, say how to take it down
            print(f"left up (ARENA_COMPOSE_KEEP): {' '.join(c.base)} down -v")
        else:
            take_down(c, times)


def test_compose_stack_runs_a_round(stack: tuple[Compose, dict[str, float]]) -> None:
    c, times = stack
    # Every service runs the image `make images` built (the project's) or its local stand-in.
    project_images = set(built_images(os.environ.get("RAY_VARIANTS", "cpu")))
    used = set()
    for cid in c.containers():
        used.add(inspect(c.env, cid)["Config"]["Image"])
    assert {i for i in used if not i.startswith("arena-local/")} <= project_images, used
    assert {i for i in project_images if "/ray:" in i and i.endswith("-cpu")} | {
        i for i in project_images if "/airflow:" in i
    } <= used, used

    # Each image starts the way the Helm chart's manifests start it (KubeRay: a login bash; the Airflow chart: bash -c).
    for image in project_images:
        res = docker(c.env, "run", "--rm", image, *LAUNCH[kind(image)])
        assert res.returncode == 0, f"{image}: {LAUNCH[kind(image)]}: {res.stdout}{res.stderr[-2000:]}"

    # The Airflow REST API, logged in as the UI user (the api-server generated the password into its volume).
    user = c.settings.get("AIRFLOW_ADMIN_USER") or "admin"
    passwords = c("exec", "-T", "airflow-apiserver", "cat", "/opt/airflow/auth/passwords.json").stdout
    password = json.loads(passwords)[user]
    api = AirflowAPI("http://127.0.0.1:8080", user, password)
    api.wait_for_dags([ROUND, ELO], timeout_s=600)
    for dag_id in (ROUND, ELO):
        api.set_paused(dag_id, False)
    t0 = time.monotonic()
    run = api.trigger(ROUND, {"iteration": 0, "sample_limit": 16})
    deadline = time.monotonic() + 2400
    while (state := api.run(ROUND, run["dag_run_id"])["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the round is still {state} after 2400 s"
        time.sleep(10)
    tis = {t["task_id"]: t["state"] for t in api.task_instances(ROUND, run["dag_run_id"])}
    assert state == "success", f"round {state}: {tis}\n{c.logs('airflow-scheduler')}"
    times["round"] = time.monotonic() - t0
    assert tis["battles_1"] == tis["submit_sft"] == tis["wait_sft"] == "success", tis

    # The battle table and the leaderboard, read from the stack's bucket as any S3 client would.
    os.environ["AWS_ACCESS_KEY_ID"] = c.settings["MINIO_ROOT_USER"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = c.settings["MINIO_ROOT_PASSWORD"]
    cfg = load_config(DOCKER / "flywheel.compose.yaml", {"storage.s3.endpoint_url": "http://127.0.0.1:9000"})
    store = ArtifactStore.from_config(cfg.storage)
    battle_runs = [k for k in store.list(f"{cfg.flywheel}/iter=0/battles") if k.endswith("/")]
    assert battle_runs, "no battle table in the bucket"
    battles = store.read_table(f"{battle_runs[0]}data.parquet")
    assert battles.num_rows > 0 and "tiny-target" in set(battles["model_a"].to_pylist()) | set(
        battles["model_b"].to_pylist()
    )
    deadline = time.monotonic() + 900  # the Elo DAG runs on the battles Asset the round updated
    while not store.exists(f"{cfg.flywheel}/leaderboard/leaderboard.json"):
        assert time.monotonic() < deadline, f"no leaderboard after 900 s: {api.runs(ELO)}"
        time.sleep(10)
    board = {row["model"] for row in store.read_json(f"{cfg.flywheel}/leaderboard/leaderboard.json")}
    assert "tiny-qwen2" in board and any(m.startswith("tiny-target") for m in board), board
    assert store.is_committed(f"{cfg.flywheel}/iter=0/model/sft")

    # The Arena view: its API with the bearer token, then the page in Chromium after Airflow's own login.
    rows = api.http.get("/arena/api/leaderboard", params={"flywheel": cfg.flywheel}).json()["rows"]
    assert {r["model"] for r in rows} == board
    from arena_ops.ui.screenshot import shoot

    shots = shoot("http://127.0.0.1:8080", user, password, cfg.flywheel, "all", ARTIFACTS / "compose")
    board_png, history_png = shots
    assert board_png.stat().st_size > 20_000 and history_png.stat().st_size > 2_000, [p.stat().st_size for p in shots]
    print("compose timings (s):", {k: round(v) for k, v in times.items()})
