"""Integration fixtures: one real Ray Serve deployment of two tiny vLLM models, shared by the modules that need it.

Deploying costs minutes on CPU, so it happens once per session; ``test_serving.py``'s last test takes it down and
asserts no Ray process is left (the fixture's own teardown is the safety net when that module does not run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

ARENA = str(Path(sys.executable).parent / "arena")
# The engine settings of every tiny served model in the integration tests: configs that share the deployment must
# declare the same (another setting is another engine app, and Serve would redeploy it).
TINY_ENGINE = "{device: cpu, dtype: float32, max_model_len: 2048, kv_cache_gib: 0.25, engine_core: in-process}"
RAY_PROCESS = re.compile(r"ray::|raylet|gcs_server|ServeReplica|default_worker")


def ray_processes() -> list[str]:
    """Ray's live processes on this machine, except those of an `arena stack` (another lane's test may run one).
    Zombies do not count: they have exited, and wait for init to reap them."""
    out = subprocess.run(["ps", "-eo", "pid,sid,stat,args"], capture_output=True, text=True).stdout.splitlines()
    found = []
    for line in out:
        if RAY_PROCESS.search(line) and "ps -eo" not in line:
            pid, sid, stat, args = line.split(None, 3)
            if not stat.startswith("Z") and not _stack_process(int(pid), int(sid)):
                found.append(f"{pid} {args}")
    return found


def _stack_process(pid: int, sid: int) -> bool:
    """A process of some `arena stack`: it, an ancestor (a stack's raylet) or its session leader carries the mark."""
    for p in (pid, sid):
        try:
            chain = [psutil.Process(p), *psutil.Process(p).parents()]
        except psutil.Error:
            continue
        for q in chain:
            try:
                if "ARENA_STACK" in q.environ():
                    return True
            except psutil.Error:
                continue
    return False


def replica_pid(app_deployment: str) -> int:
    for line in ray_processes():
        if f"ServeReplica:{app_deployment}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no replica process for {app_deployment}: {ray_processes()}")


class Serving:
    """An `arena serve` deployment of two tiny models on its own local Ray head; ``backend``: ``serving.backend``."""

    def __init__(self, root: Path, backend: str = "vllm") -> None:
        self.root = root
        self.backend = backend
        # The Serve deployment of each model app (replica processes are named ServeReplica:<app>:<deployment>).
        self.deployment = "VLLMServer" if backend == "vllm" else "LLMServer"
        self.port = free_port()
        self.config = root / "arena.yaml"
        engine = TINY_ENGINE
        self.config.write_text(
            textwrap.dedent(f"""\
            flywheel: serving-test
            storage: {{root: file://artifacts}}
            models:
              target:
                name: tiny-a
                source: {{kind: served, path: ./models/a, tiny: {{arch: llama, seed: 0}}, engine: {engine}}}
              competitors:
                - name: tiny-b
                  source: {{kind: served, path: ./models/b, tiny: {{arch: qwen2, seed: 1}}, engine: {engine}}}
              judge:
                name: tiny-b
                source: {{kind: served, path: ./models/b, tiny: {{arch: qwen2, seed: 1}}, engine: {engine}}}
            serving: {{backend: {backend}, port: {self.port}, deploy_timeout_s: 540}}
            """)
        )
        self.env = {
            # The replicas fetch s3:// weights with the node's credentials; the tests' S3 servers take any keys.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **os.environ,
            "ARENA_RAY_STATE": str(root / "ray"),
            "ARENA_RAY_TMP": tempfile.mkdtemp(prefix="ar-", dir="/tmp"),  # Unix socket paths must stay short
            "ARENA_RAY_PORT": str(free_port()),
        }
        self.url = f"http://127.0.0.1:{self.port}/v1"  # the OpenAI base URL

    def arena(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ARENA, "--config", str(self.config), *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )


@pytest.fixture(scope="session")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    yield from serve_up(tmp_path_factory, "vllm")


def serve_up(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Serving]:
    if ray_processes():
        pytest.skip(f"Ray processes already run on this machine; the no-leftovers check needs none: {ray_processes()}")
    s = Serving(tmp_path_factory.mktemp(f"serving-{backend}"), backend)
    res = s.arena("serve", "up")
    try:
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.strip().endswith(s.url)
        yield s
    finally:
        s.arena("serve", "down")
