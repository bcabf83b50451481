"""Real Ray Serve + vLLM (CPU) with two tiny models: HTTP chat, routing by model id, structured output, logprobs,
an in-place target update that leaves the other model running, and a `serve down` that leaves no Ray process.

Driven through the `arena serve` CLI, as a user would, on an isolated local Ray head (own port and state dir), with the
default backend (``serving.backend: vllm``); ``test_serving_ray_llm.py`` runs the same tests on ``ray-serve-llm``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from arena_ops.config import SamplingConfig
from arena_ops.serving.client import ChatClient, RequestFailed, StructuredOutput
from tests.integration.conftest import Serving, ray_processes, replica_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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

    # From this config's steady state: other modules applied their own configs to this cluster before (a CI run
    # saw a competitor restarted when this config was re-applied after them; see the note of issue 16).
    steady = serving.arena("serve", "up")
    assert steady.returncode == 0, steady.stderr[-3000:]
    before_a = replica_pid(f"arena-model-tiny-a:{serving.deployment}")
    before_b = replica_pid(f"arena-model-tiny-b:{serving.deployment}")
    before_router = replica_pid("arena-router:ArenaRouter")
    greedy = SamplingConfig(temperature=0.0, max_tokens=3)
    old = chat(serving.url, "tiny-a", sampling=greedy, top_logprobs=3)
    new_weights = build_tiny_chat_model(serving.root / "models" / "a-iter1", seed=7)
    res = serving.arena("serve", "update-target", str(new_weights))
    assert res.returncode == 0, res.stderr[-3000:]
    # Other test modules deployed their own configs on this cluster before; whatever else this call re-applies,
    # only the target may restart or load new weights: the replicas' pids below and the engines' timelines.
    assert "redeployed: arena-model-tiny-a" in " ".join(res.stdout.split())
    assert replica_pid(f"arena-model-tiny-b:{serving.deployment}") == before_b
    assert replica_pid("arena-router:ArenaRouter") == before_router
    if serving.backend == "vllm":  # the weights are the deployment's user_config: swapped inside the same replica
        assert replica_pid(f"arena-model-tiny-a:{serving.deployment}") == before_a
    else:  # ray.serve.llm: a new replica
        assert replica_pid(f"arena-model-tiny-a:{serving.deployment}") != before_a
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
