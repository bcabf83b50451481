"""`arena stack` without starting it: what the config must say, the generated secrets and Airflow settings, the
environment each component gets; and stopping processes by session (real processes)."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from arena_ops.config import load_config
from arena_ops.local.stack import Stack, StackError
from arena_ops.procs import session_members, stop_sessions

BASE = """\
flywheel: s
storage: {root: s3://bucket/fw, s3: {endpoint_url: "http://127.0.0.1:8333", conn_id: arena_s3}}
models:
  target: {name: a, source: {kind: recorded, path: a.jsonl}}
  competitors: [{name: b, source: {kind: recorded, path: b.jsonl}}]
  judge: {name: b, source: {kind: recorded, path: b.jsonl}}
training: {launcher: {kind: ray_job, ray_address: "http://127.0.0.1:8266"}}
serving: {ray_address: "127.0.0.1:6390"}
stack: {dir: st, postgres_port: 5999, airflow_port: 8999}
"""


def stack_of(tmp_path: Path, text: str = BASE) -> Stack:
    path = tmp_path / "arena.yaml"
    path.write_text(textwrap.dedent(text))
    return Stack(load_config(path), path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("s3://bucket/fw", "file://store", "storage.root"),
        ('"http://127.0.0.1:8333"', '"http://minio.example:9000"', "storage.s3.endpoint_url"),
        ('ray_address: "127.0.0.1:6390"', "port: 8000", "serving.ray_address"),
        ('"http://127.0.0.1:8266"', '"http://10.0.0.5:8265"', "training.launcher.ray_address"),
    ],
)
def test_config_must_describe_a_loopback_stack(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(StackError, match=message.replace(".", r"\.")):
        stack_of(tmp_path, BASE.replace(old, new))


def test_addresses_come_from_the_config(tmp_path: Path) -> None:
    s = stack_of(tmp_path)
    assert (s.bucket, s.s3_port, s.ray_port, s.dashboard_port) == ("bucket", 8333, 6390, 8266)
    assert (s.pg_port, s.airflow_url) == (5999, "http://127.0.0.1:8999")
    assert s.dir == tmp_path / "st"  # relative to the config file


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    s = stack_of(tmp_path)
    first = s.secrets()
    assert s.secrets() == first and len(set(first.values())) == len(first)
    assert stat.S_IMODE((s.dir / "secrets.json").stat().st_mode) == 0o600


def test_airflow_settings(tmp_path: Path) -> None:
    s = stack_of(tmp_path)
    s._write_airflow_cfg()
    for name in ("airflow.cfg", "passwords.json"):
        assert stat.S_IMODE((s.airflow_home / name).stat().st_mode) == 0o600
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(s.airflow_home / "airflow.cfg")
    assert cfg["core"]["executor"] == "LocalExecutor"
    assert cfg["database"]["sql_alchemy_conn"].startswith("postgresql+psycopg2://postgres:")
    assert cfg["database"]["sql_alchemy_conn"].endswith("@127.0.0.1:5999/airflow")
    assert (
        cfg["api"]["port"] == "8999" and cfg["core"]["execution_api_server_url"] == "http://127.0.0.1:8999/execution/"
    )
    assert cfg["api_auth"]["jwt_secret"] == s.secrets()["airflow_jwt_secret"]  # shared by every component
    assert (cfg["logging"]["worker_log_server_port"], cfg["logging"]["trigger_log_server_port"]) == ("9000", "9001")
    assert json.loads((s.airflow_home / "passwords.json").read_text()) == {"admin": s.secrets()["airflow_password"]}


def test_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = stack_of(tmp_path)
    client = s.client_env()
    conn = json.loads(client["AIRFLOW_CONN_ARENA_S3"])
    assert conn["extra"]["endpoint_url"] == "http://127.0.0.1:8333" and conn["login"] == s.secrets()["s3_access_key"]
    assert client["AIRFLOW_HOME"] == str(s.airflow_home) and client["RAY_AUTH_MODE"] == "disabled"
    # A shell set up with `stack env` must not leak its connection or home into the stack's own Airflow.
    monkeypatch.setenv("AIRFLOW_CONN_ARENA_S3", "{}")
    monkeypatch.setenv("AIRFLOW_HOME", "/elsewhere")
    env = s._airflow_env()
    assert "AIRFLOW_CONN_ARENA_S3" not in env and env["AIRFLOW_HOME"] == str(s.airflow_home)
    assert env["ARENA_STACK"] == str(s.dir)
    ray = s._ray_env()
    assert ray["AWS_ACCESS_KEY_ID"] == s.secrets()["s3_access_key"]  # replicas and jobs read the store with these


def test_stop_sessions_stops_the_session_and_nothing_else(tmp_path: Path) -> None:
    leader = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        while len(session_members({leader.pid})) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        members = session_members({leader.pid})
        assert leader.pid in members and len(members) >= 2
        assert stop_sessions({leader.pid}, grace_s=5) == []
        leader.wait(5)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        for pid in session_members({leader.pid}):
            os.kill(pid, 9)


@pytest.mark.parametrize("leader_reaped", [True, False], ids=["reaped", "zombie"])
def test_a_dead_components_leftover_session_is_stopped(tmp_path: Path, leader_reaped: bool) -> None:
    """A SIGKILLed leader leaves its children (a scheduler's LocalExecutor workers and log server) in its session:
    `up` stops them before restarting the component — also while the dead leader is a zombie nobody reaps (a
    container's init, CI's: there the restarted scheduler never scheduled again); a zombie is not one of the stack's
    running processes; a live session leader that reused the pid is left alone."""
    import signal
    import sys

    import psutil

    stack = stack_of(tmp_path)
    stack.dir.mkdir(parents=True, exist_ok=True)
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(600)']); print(flush=True); time.sleep(600)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    leader.stdout.readline()  # the child has been started
    created = psutil.Process(leader.pid).create_time()
    child = [int(p) for p in os.listdir("/proc") if p.isdigit() and _sid(int(p)) == leader.pid and int(p) != leader.pid]
    assert child, "the leader's child did not start"
    os.kill(leader.pid, signal.SIGKILL)
    stack._save_state({"scheduler": {"pid": leader.pid, "created": created}, "_sessions": [leader.pid]})
    try:
        if leader_reaped:
            leader.wait()
        else:
            deadline = time.monotonic() + 20
            while _alive(leader.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert psutil.Process(leader.pid).status() == psutil.STATUS_ZOMBIE
            assert stack.pid("scheduler") is None
            assert leader.pid not in stack.marked() and set(child) <= set(stack.marked())
        stack._stop_leftovers("scheduler")
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in child)
    finally:
        for pid in child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leader.wait()

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        # the pid now leads a live session: not ours to stop
        stack._save_state({"scheduler": {"pid": live.pid, "created": created}})
        stack._stop_leftovers("scheduler")
        time.sleep(0.5)
        assert live.poll() is None
    finally:
        live.kill()
        live.wait()


def _sid(pid: int) -> int | None:
    import os

    try:
        return os.getsid(pid)
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_component_is_known_by_its_pid_and_start_time(tmp_path: Path) -> None:
    """The start time recorded at spawn identifies a component's process; psutil's start time moves by a whole second
    when the kernel's boot time (whole seconds, from the wall clock) is re-rounded, which must not lose a running
    component, while a pid reused by a process started much later is not the component."""
    import psutil

    stack = stack_of(tmp_path)
    stack.dir.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    for shift, found in ((0.0, True), (1.0, True), (-1.0, True), (3600.0, False)):
        stack._save_state({"s3": {"pid": me.pid, "created": me.create_time() + shift}})
        assert (stack.pid("s3") == me.pid) is found, shift
    stack._save_state({})
    assert stack.pid("s3") is None
