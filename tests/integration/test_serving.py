"""Real Ray Serve + vLLM (CPU) with two tiny models: HTTP chat, routing by model id, structured output, logprobs,
an in-place target update that leaves the other model running, and a `serve down` that leaves no Ray process.

Driven through the `arena serve` CLI, as a user would, on an isolated local Ray head (own port and state dir).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from arena_ops.config import SamplingConfig
from arena_ops.serving.client import ChatClient, RequestFailed, StructuredOutput
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARENA = str(Path(sys.executable).parent / "arena")
RAY_PROCESS = re.compile(r"ray::|raylet|gcs_server|ServeReplica|default_worker")


def ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if RAY_PROCESS.search(line) and "ps -eo" not in line]


def replica_pid(app_deployment: str) -> int:
    for line in ray_processes():
        if f"ServeReplica:{app_deployment}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no replica process for {app_deployment}: {ray_processes()}")


class Serving:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.config = root / "arena.yaml"
        engine = "{device: cpu, dtype: float32, max_model_len: 512, kv_cache_gib: 0.25}"
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
            serving: {{port: {self.port}, deploy_timeout_s: 540}}
            """)
        )
        self.env = {
            **os.environ,
            "ARENA_RAY_STATE": str(root / "ray"),
            "ARENA_RAY_TMP": tempfile.mkdtemp(prefix="ar-", dir="/tmp"),  # Unix socket paths must stay short
            "ARENA_RAY_PORT": str(free_port()),
        }
        self.url = f"http://127.0.0.1:{self.port}"

    def arena(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ARENA, "--config", str(self.config), *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    if ray_processes():
        pytest.skip(f"Ray processes already run on this machine; the no-leftovers check needs none: {ray_processes()}")
    s = Serving(tmp_path_factory.mktemp("serving"))
    res = s.arena("serve", "up")
    try:
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.strip().endswith(s.url)
        yield s
    finally:
        s.arena("serve", "down")


def chat(url: str, model: str, **kw) -> object:
    async def go():
        async with ChatClient(url, model, timeout_s=120, max_retries=1) as c:
            return await c.chat([{"role": "user", "content": "What is 2 plus 2?"}], **kw)

    return asyncio.run(go())


def test_status_lists_running_applications(serving: Serving) -> None:
    res = serving.arena("serve", "status")
    assert res.returncode == 0, res.stderr
    apps = json.loads(res.stdout)["applications"]
    assert {name: a["status"] for name, a in apps.items()} == {
        "arena-router": "RUNNING",
        "arena-model-tiny-a": "RUNNING",
        "arena-model-tiny-b": "RUNNING",
    }


def test_two_models_routed_by_id(serving: Serving) -> None:
    sampling = SamplingConfig(temperature=0.0, max_tokens=6)
    a = chat(serving.url, "tiny-a", sampling=sampling, top_logprobs=3)
    b = chat(serving.url, "tiny-b", sampling=sampling, top_logprobs=3)
    for res in (a, b):
        assert res.completion_tokens >= 1 and res.finish_reason in ("length", "stop")
        assert len(res.logprobs) == res.completion_tokens and 1 <= len(res.logprobs[0].top) <= 3
    # Different random models: the same greedy request gets different token distributions.
    assert a.logprobs[0].top != b.logprobs[0].top


def test_unknown_model_is_a_clear_404(serving: Serving) -> None:
    with pytest.raises(RequestFailed, match=r"HTTP 404.*'nope' is not served here.*not retried"):
        chat(serving.url, "nope")


def test_structured_output_choice_and_regex(serving: Serving) -> None:
    picked = chat(
        serving.url,
        "tiny-a",
        structured=StructuredOutput(choice=["[[A]]", "[[B]]", "[[C]]"]),
        sampling=SamplingConfig(max_tokens=16),
    )
    assert picked.text in {"[[A]]", "[[B]]", "[[C]]"}
    verdict = chat(
        serving.url,
        "tiny-b",
        structured=StructuredOutput(regex=r'\{"score_a": [1-9], "score_b": [1-9]\}'),
        sampling=SamplingConfig(max_tokens=32),
    )
    parsed = json.loads(verdict.text)
    assert set(parsed) == {"score_a", "score_b"} and all(1 <= v <= 9 for v in parsed.values())


def test_update_target_restarts_only_the_target(serving: Serving) -> None:
    from arena_ops.tiny_model import build_tiny_chat_model

    before_a = replica_pid("arena-model-tiny-a:LLMServer")
    before_b = replica_pid("arena-model-tiny-b:LLMServer")
    before_router = replica_pid("arena-router:ArenaRouter")
    greedy = SamplingConfig(temperature=0.0, max_tokens=3)
    old = chat(serving.url, "tiny-a", sampling=greedy, top_logprobs=3)
    new_weights = build_tiny_chat_model(serving.root / "models" / "a-iter1", seed=7)
    res = serving.arena("serve", "update-target", str(new_weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert replica_pid("arena-model-tiny-b:LLMServer") == before_b
    assert replica_pid("arena-router:ArenaRouter") == before_router
    assert replica_pid("arena-model-tiny-a:LLMServer") != before_a
    new = chat(serving.url, "tiny-a", sampling=greedy, top_logprobs=3)
    assert new.logprobs[0].top != old.logprobs[0].top  # the new weights answer


def test_up_again_changes_nothing(serving: Serving) -> None:
    before = sorted(ray_processes())
    res = serving.arena("serve", "up", "--target", str(serving.root / "models" / "a-iter1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.split()[0] for p in ray_processes()) == sorted(p.split()[0] for p in before)


def test_zz_down_leaves_no_ray_processes(serving: Serving) -> None:
    res = serving.arena("serve", "down")
    assert res.returncode == 0, res.stderr
    assert ray_processes() == []
    status = serving.arena("serve", "status")
    assert status.returncode == 2 and "no local Ray head" in status.stderr
