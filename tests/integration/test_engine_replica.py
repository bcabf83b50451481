"""The engine replica of ``serving.backend: vllm`` (arena_ops.serving.engine) in this process, without Ray: vLLM's
OpenAI app over either engine core (in the replica, arena_ops.serving.inproc, or vLLM's engine-core process),
concurrent requests, structured output, and a weights swap (Serve's ``reconfigure``) that serves the new weights
from the same replica. The same class behind
Ray Serve is tests/integration/test_serving.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
ENGINE = {"device": "cpu", "dtype": "float32", "max_model_len": 512, "kv_cache_gib": 0.25}


def chat(max_tokens: int = 4, **extra: object) -> bytes:
    messages = [{"role": "user", "content": "What is 2 plus 2?"}]
    return json.dumps(
        {"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0, **extra}
    ).encode()


def top(body: bytes) -> list:
    return [t["token"] for t in json.loads(body)["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]


@pytest.mark.parametrize("engine_core", ["in-process", "process"])
def test_replica_serves_concurrently_and_swaps_weights_in_place(
    engine_core: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # In a fresh interpreter, as in a Serve replica: vLLM's CPU platform walks every loaded module when a worker
    # starts, and Flask's context proxies (loaded in this process by the Airflow tests) raise on that walk.
    call = f"scenario({engine_core!r}, {str(tiny_model_dir)!r}, {str(tmp_path)!r})"
    code = f"from tests.integration.test_engine_replica import scenario; {call}"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    assert "scenario passed" in res.stdout


def scenario(engine_core: str, tiny_model: str, tmp: str) -> None:
    from arena_ops.config import EngineConfig
    from arena_ops.serving.engine import VLLMServer, engine_env

    tiny_model_dir, tmp_path = Path(tiny_model), Path(tmp)
    engine = {**ENGINE, "engine_core": engine_core}
    os.environ.update(engine_env(EngineConfig(**engine), "0-1"))  # as the replica does
    server_cls = VLLMServer.func_or_class

    async def go() -> None:
        server = server_cls("m", engine, "0-1")
        assert server.loaded() is None
        await server.reconfigure({"path": str(tiny_model_dir)})
        assert server.loaded() == {"path": str(tiny_model_dir)}
        assert list(server.startup_timeline()) == [
            "replica_started", "vllm_imported", "load_started", "weights_local", "engine_ready", "app_ready",
            "first_token",
        ]  # fmt: skip
        status, old, _ = await server.handle_request(
            "POST", "/v1/chat/completions", chat(logprobs=True, top_logprobs=3)
        )
        assert status == 200, old
        replies = await asyncio.gather(
            *(server.handle_request("POST", "/v1/completions", json.dumps(
                {"model": "m", "prompt": f"Count to {i}", "max_tokens": 16, "min_tokens": 16}).encode())
              for i in range(24))
        )  # fmt: skip
        assert all(s == 200 and json.loads(b)["usage"]["completion_tokens"] == 16 for s, b, _ in replies)
        status, body, _ = await server.handle_request(
            "POST", "/v1/chat/completions", chat(16, structured_outputs={"regex": "[AB]{3}"})
        )
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] in {
            a + b + c for a in "AB" for b in "AB" for c in "AB"
        }

        # New weights of the same model (a fine-tuned checkpoint): loaded into the running engine.
        first_engine = server.engine
        new = {"path": str(tmp_path / "new"), "tiny": {"arch": "llama", "seed": 9}}  # built by the replica
        await server.reconfigure(new)
        assert server.loaded() == new and server.engine is first_engine
        assert list(server.startup_timeline()) == ["load_started", "weights_local", "engine_ready", "first_token"]
        status, swapped, _ = await server.handle_request(
            "POST", "/v1/chat/completions", chat(logprobs=True, top_logprobs=3)
        )
        assert status == 200 and top(swapped) != top(old)  # the new weights answer
        stamps = server.startup_timeline()
        await server.reconfigure(dict(new))  # the same weights again: nothing reloads
        assert server.startup_timeline() == stamps

        # Another architecture: a new engine, the old one stopped first.
        other = {"path": str(tmp_path / "qwen"), "tiny": {"arch": "qwen2", "seed": 3}}
        await server.reconfigure(other)
        assert server.loaded() == other and server.engine is not first_engine
        assert "old_engine_stopped" in server.startup_timeline()
        status, body, _ = await server.handle_request("POST", "/v1/chat/completions", chat())
        assert status == 200, body

        with pytest.raises(Exception, match="does not exist"):
            await server.reconfigure({"path": str(tmp_path / "missing")})
        status, body, _ = await server.handle_request("POST", "/v1/chat/completions", chat())
        assert status == 503 and b"does not exist" in body  # a clear error, not a hang
        assert server.loaded() is None

    asyncio.run(go())
    print("scenario passed")
