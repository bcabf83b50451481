"""Deploy, inspect, update and tear down the Serve application on a Ray cluster (local head or remote).

``up`` connects to ``serving.ray_address`` or, when it is unset, to a local Ray head that it starts with
``ray start --head`` (a detached head outlives the CLI process, unlike ``ray.init()``'s). It deploys, waits until
every model answers ``/v1/models`` (or fails with the Serve status of each deployment), and returns the endpoint.
``down`` deletes the application, shuts Serve down and stops the local head it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena_ops.config import ArenaConfig
from arena_ops.errors import ServingError
from arena_ops.serving.app import (
    ENGINE_IMPORT_PATH,
    ROUTER_APP,
    local_model_dir,
    model_app_name,
    model_route,
    serve_config,
    served_models,
)
from arena_ops.serving.client import ChatClient, serving_base_url

log = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("ARENA_RAY_STATE", Path.home() / ".cache" / "arena-flywheel" / "ray"))
# Ray's temp dir holds Unix sockets (paths limited to 107 bytes), so it stays short and out of the home directory.
RAY_TEMP_DIR = Path(os.environ.get("ARENA_RAY_TMP", Path(tempfile.gettempdir()) / f"arena-ray-{os.getuid()}"))
LOCAL_HEAD_PORT = int(os.environ.get("ARENA_RAY_PORT", "6389"))
# Logical CPUs of the local head: Serve's controller, proxy, ingress and each replica's placement group all claim CPUs,
# which on a 2-core laptop would leave the ingress unscheduled. vLLM's threads are bound separately.
LOCAL_HEAD_CPUS = int(os.environ.get("ARENA_RAY_NUM_CPUS", "32"))
# Ray 2.60 turns token auth on by default; the local head listens on loopback only, so it runs without tokens
# (its driver and workers must agree on the mode). Remote clusters keep whatever auth they are configured with.
LOCAL_HEAD_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _state_file() -> Path:
    return STATE_DIR / "local-head.json"


def start_local_head() -> str:
    """Start (or reuse) the local detached Ray head; return its address."""
    address = f"127.0.0.1:{LOCAL_HEAD_PORT}"
    state = _state_file()
    if state.exists() and _head_alive(address):
        return address
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",  # loopback only: the embedded head is this machine's business
        f"--port={LOCAL_HEAD_PORT}",
        f"--num-cpus={LOCAL_HEAD_CPUS}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={RAY_TEMP_DIR}",
    ]
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # A session of its own, which Ray's daemons and workers inherit: `down` stops that session, not every Ray process
    # on the machine (`ray stop` would take an `arena stack` cluster with it).
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **LOCAL_HEAD_ENV},
        start_new_session=True,
    )
    try:
        _out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    if proc.returncode != 0:
        raise ServingError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {err[-2000:]}")
    state.write_text(json.dumps({"address": address, "session": proc.pid, "started_at": time.time()}))
    return address


def _ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


def _head_alive(address: str) -> bool:
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def connect(cfg: ArenaConfig, start: bool = True) -> str:
    """``ray.init`` against the configured cluster or the local head (started when ``start``)."""
    import ray

    address = cfg.serving.ray_address
    if address is None:
        os.environ.update(LOCAL_HEAD_ENV)
        address = f"127.0.0.1:{LOCAL_HEAD_PORT}"
        if not _head_alive(address):
            if not start:
                raise ServingError(f"no local Ray head at {address}: run `arena serve up` first")
            address = start_local_head()
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return address


@dataclass
class Deployment:
    """What one ``up`` did: the endpoint, the applications it (re)deployed, and how long each engine took to start."""

    endpoint: str
    deployed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cluster_s: float = 0.0  # of which: Ray (a local head is started when none runs) and Serve's controller and proxy
    deploy_started: float = field(default_factory=time.time)
    # model id → start-up phase (see PHASES) → seconds, backend ``vllm``.
    startup: dict[str, dict[str, float]] = field(default_factory=dict)


PHASES = {
    "replica_started": "actor",  # a new replica: Ray scheduling, worker process, Serve's replica wrapper
    "vllm_imported": "import",
    "load_started": "cfg",  # Serve hands the replica its weights (a swap of weights starts here)
    "weights_local": "weights",
    "old_engine_stopped": "stop",  # a swap that needs a new engine stops the old one first
    "engine_ready": "engine",  # a new engine, or new weights loaded into the running one
    "app_ready": "app",
    "first_token": "token",
}


def up(cfg: ArenaConfig, target_path: str | None = None, timeout_s: float | None = None) -> str:
    """Deploy every served model and the router, wait until all answer; return the OpenAI-compatible base URL.

    Idempotent: an application that is running with the same settings (a fingerprint kept in Ray's KV store) is
    left alone, so calling ``up`` again — e.g. from each Airflow round — restarts nothing that did not change.
    """
    return deploy(cfg, target_path, timeout_s).endpoint


def deploy(cfg: ArenaConfig, target_path: str | None = None, timeout_s: float | None = None) -> Deployment:
    """:func:`up`, reporting what was deployed and each engine's start-up timeline."""
    rater = [cfg.testset.rater] if cfg.testset.rater else []
    if not any(spec.source.kind == "served" for spec in [*cfg.models.battlers(), cfg.models.judge, *rater]):
        log.info("no served models in the config (recorded/external only): nothing to deploy")
        return Deployment(serving_base_url(cfg.serving))
    if cfg.serving.rayservice is not None:  # KubeRay owns the applications: ask it (see serving.kuberay)
        from arena_ops.serving import kuberay

        kuberay.apply(cfg, target_path, timeout_s=timeout_s)
        return Deployment(serving_base_url(cfg.serving))
    models = served_models(cfg, target_path)
    started = time.time()
    with driver(cfg):
        result = _deploy(cfg, target_path, timeout_s)
        if cfg.serving.backend == "vllm":
            result.startup = _startup(cfg, models, result.deployed, result.deploy_started)
    result.seconds = round(time.time() - started, 1)
    result.cluster_s = round(result.deploy_started - started, 1)
    return result


def _startup(cfg: ArenaConfig, models: list[Any], deployed: list[str], since: float) -> dict[str, dict[str, float]]:
    """Each (re)deployed engine's phases, from the timestamps its replica recorded (see serving.engine)."""
    out = {}
    for m in models:
        if model_app_name(m.name) not in deployed:
            continue
        stamps = _ask(cfg, m.name, "startup")
        if not stamps:  # a report, not a reason to fail a deployment that is up
            log.warning("no start-up timeline from %s", m.name)
            continue
        phases, last = {}, since
        for key, name in PHASES.items():
            if key in stamps:
                phases[name] = round(stamps[key] - last, 2)
                last = stamps[key]
        phases["total"] = round(last - since, 2)
        out[m.name] = phases
    return out


def _ask(cfg: ArenaConfig, model: str, what: str) -> Any:
    """An engine replica's ``/arena/<what>`` through the Serve proxy; None when it does not answer (yet)."""
    import httpx

    url = f"http://{cfg.serving.host}:{cfg.serving.port}{model_route(model)}/arena/{what}"
    try:
        resp = httpx.get(url, timeout=10)
        return resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


@contextlib.contextmanager
def driver(cfg: ArenaConfig) -> Iterator[None]:
    """Connected to Ray for the block only, when this call made the connection. Serve's applications are detached
    and keep running; a process that stayed a driver (an Airflow task, `arena round run`, a test) would be exited by
    Ray's core worker once that cluster goes away (`serve down`), taking the process with it."""
    import ray

    connected_here = not ray.is_initialized()
    connect(cfg)
    try:
        yield
    finally:
        if connected_here:
            ray.shutdown()


def _deploy(cfg: ArenaConfig, target_path: str | None, timeout_s: float | None) -> Deployment:
    """Apply the declarative config of every app (Serve's own config path, as a RayService does): apps whose config
    is unchanged are left alone, an engine app whose weights alone changed reconfigures its running replicas, any
    other change restarts that app only."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    serve.start(
        proxy_location=cfg.serving.proxy_location, http_options={"host": cfg.serving.host, "port": cfg.serving.port}
    )
    config = serve_config(cfg, target_path, _cpu_bind(cfg), host=cfg.serving.host)
    if cfg.serving.backend == "ray-serve-llm":
        _local_weights(cfg, target_path)
    apps = {app["name"]: app for app in config["applications"]}
    prints = {name: _fingerprint(app) for name, app in apps.items()}
    running = serve.status().applications
    stale = [n for n in apps if _last(getattr(running.get(n), "status", "")) != "RUNNING" or _kv_get(n) != prints[n]]
    deploy_started = time.time()
    # Serve's config is the whole cluster's: an app this config does not declare (another config's model, applied
    # to the same cluster) is deleted, and comes back as a new replica when that config is applied again.
    removed = sorted(n for n in running if n not in apps)
    if stale and removed:
        log.warning("this config does not declare %s: Serve removes them", removed)
    if stale:
        log.info("deploying %s", stale)
        # The whole config, always (Serve deletes apps it does not list); the public `serve deploy` does the same
        # through the dashboard's REST API, which a remote cluster may not expose to this client.
        try:
            _get_global_client().deploy_apps(ServeDeploySchema.parse_obj(config))
        except Exception as exc:  # e.g. apps deployed imperatively (by hand, or an older arena) cannot be mixed in
            raise ServingError(
                f"Serve refused the serving config: {type(exc).__name__}: {str(exc)[-1500:]} — if applications "
                "that arena did not declare are running on this cluster, remove them first (`arena serve down` "
                "for a local head)"
            ) from exc
    weights = {
        m.name: apps[model_app_name(m.name)]["deployments"][0]["user_config"]
        for m in served_models(cfg, target_path)
        if model_app_name(m.name) in stale and apps[model_app_name(m.name)]["import_path"] == ENGINE_IMPORT_PATH
    }
    wait_ready(cfg, list(apps), timeout_s if timeout_s is not None else cfg.serving.deploy_timeout_s, weights)
    for name in stale:
        _kv_put(name, prints[name])
    return Deployment(serving_base_url(cfg.serving), stale, deploy_started=deploy_started)


def _local_weights(cfg: ArenaConfig, target_path: str | None) -> None:
    """``ray.serve.llm`` loads what its config names: build configured tiny models that do not exist yet (engine
    apps do that in the replica)."""
    for m in served_models(cfg, target_path):
        if m.tiny is not None and not m.path.startswith("s3://"):
            local_model_dir(m, cfg.storage)


def update_target(cfg: ArenaConfig, target_path: str, timeout_s: float | None = None) -> Deployment:
    """Serve the target from new weights; only the target's application is redeployed, the others keep running."""
    return deploy(cfg, target_path=target_path, timeout_s=timeout_s)


def _fingerprint(obj: Any) -> str:
    import hashlib

    from arena_ops import __version__

    return hashlib.sha256(f"{__version__}|{json.dumps(obj, sort_keys=True, default=str)}".encode()).hexdigest()


def _kv_key(app: str) -> bytes:
    return f"arena-flywheel/serve-fingerprint/{app}".encode()


def _kv_get(app: str) -> str | None:
    # Ray's internal KV lives in the GCS: shared by every driver (CLI, Airflow workers) of this cluster.
    from ray.experimental.internal_kv import _internal_kv_get

    value = _internal_kv_get(_kv_key(app))
    return value.decode() if value else None


def _kv_put(app: str, value: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(_kv_key(app), value.encode(), overwrite=True)


def _cpu_bind(cfg: ArenaConfig) -> str | None:
    # On the local head vLLM's default OMP binding used one core: bind all of this machine's cores.
    return f"0-{max((os.cpu_count() or 1) - 1, 0)}" if cfg.serving.ray_address is None else None


def wait_ready(
    cfg: ArenaConfig, apps: list[str], timeout_s: float, weights: dict[str, dict[str, Any]] | None = None
) -> None:
    """Until every app is RUNNING, every engine in ``weights`` (model → its deployment's ``user_config``) serves
    those weights, and every model is listed by the router; a clear error on failure or timeout."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    pending_weights = dict(weights or {})
    while True:
        statuses = serve.status().applications
        states = {name: str(getattr(statuses.get(name), "status", "MISSING")).rsplit(".", 1)[-1] for name in apps}
        failed = [n for n, st in states.items() if st in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise ServingError(
                "Serve failed to deploy: " + "; ".join(f"{n}: {_describe(statuses.get(n))}" for n in failed)
            )
        if all(st == "RUNNING" for st in states.values()):
            # A status read just after the config was applied can still be the old RUNNING: ask the replicas.
            pending_weights = {m: w for m, w in pending_weights.items() if _ask(cfg, m, "loaded") != w}
            if not pending_weights:
                break
        if time.monotonic() > deadline:
            pending = {n: st for n, st in states.items() if st != "RUNNING"}
            pending.update({model_app_name(m): "loading weights" for m in pending_weights})
            raise ServingError(
                f"Serve apps not ready after {timeout_s:.0f}s: "
                + "; ".join(f"{n} ({st}): {_describe(statuses.get(n))}" for n, st in pending.items())
            )
        time.sleep(1)
    remaining = max(deadline - time.monotonic(), 10.0)
    asyncio.run(_all_listed(cfg, remaining))


async def _all_listed(cfg: ArenaConfig, timeout_s: float) -> None:
    base = serving_base_url(cfg.serving)
    for m in served_models(cfg):
        async with ChatClient(base, m.name) as client:
            await client.ready(timeout_s=timeout_s)


def _describe(app: Any) -> str:
    if app is None:
        return "application not found"
    parts = [str(getattr(app, "message", "") or "")]
    for name, dep in getattr(app, "deployments", {}).items():
        parts.append(f"{name}: {dep.status} {dict(dep.replica_states)} {dep.message or ''}".strip())
    return "; ".join(p for p in parts if p)


def status(cfg: ArenaConfig) -> dict[str, Any]:
    """Application and per-deployment status, without starting anything."""
    if cfg.serving.rayservice is not None:
        from arena_ops.serving import kuberay

        return kuberay.status(cfg)
    from ray import serve

    connect(cfg, start=False)
    apps = serve.status().applications
    names = [ROUTER_APP, *(model_app_name(m.name) for m in served_models(cfg))]
    out: dict[str, Any] = {"endpoint": serving_base_url(cfg.serving), "applications": {}}
    for name in names:
        app = apps.get(name)
        if app is None:
            out["applications"][name] = {"status": "NOT_DEPLOYED"}
            continue
        out["applications"][name] = {
            "status": _last(app.status),
            "deployments": {
                d_name: {"status": _last(d.status), "replicas": {_last(k): v for k, v in d.replica_states.items()}}
                for d_name, d in app.deployments.items()
            },
        }
    return out


def _last(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def down(cfg: ArenaConfig) -> None:
    """Delete the application, shut Serve down and stop the local head if arena started it."""
    if cfg.serving.rayservice is not None:
        raise ServingError(
            f"serving is managed by the RayService {cfg.serving.rayservice.name!r}: scale or delete it with Helm "
            "(rayService.enabled=false), not `serve down`"
        )
    import ray
    from ray import serve

    try:
        connect(cfg, start=False)
    except ServingError:
        log.info("no Ray cluster to tear down")
    else:
        serve.shutdown()
        ray.shutdown()
    if cfg.serving.ray_address is None and _state_file().exists():
        from arena_ops.procs import stop_sessions

        session = json.loads(_state_file().read_text()).get("session")
        if session is None:  # a head started by an older arena
            subprocess.run([_ray_bin(), "stop", "--force"], capture_output=True, text=True, timeout=120)
        else:
            left = stop_sessions({session}, grace_s=30)
            if left:
                raise ServingError(f"the local Ray head's processes {left} did not stop")
        _state_file().unlink(missing_ok=True)
