"""Second hostile pass, the model client: a Retry-After of nan, a server that trickles, a malformed usage or logprobs,
an endless body and a 100k-deep JSON body each end as a retry or a clear error — never a hang, a raw TypeError or a
RecursionError — and a malformed usage never costs the answer."""

from __future__ import annotations

import time

import pytest

from arena_ops.serving.client import RequestFailed
from tests.unit.serving.test_client import _client, run, server_factory  # noqa: F401 - the fixture

HI = [{"role": "user", "content": "hi"}]


def test_a_retry_after_of_nan_does_not_hang(server_factory) -> None:  # noqa: F811
    import httpx

    from arena_ops.serving.client import _retry_after

    waits = {v: _retry_after(httpx.Response(429, headers={"Retry-After": v})) for v in ("nan", "inf", "-5", "3", "1e9")}
    assert waits == {"nan": None, "inf": None, "-5": None, "3": 3.0, "1e9": 60.0}  # a wait is finite, or ours
    srv = server_factory(["retry-nan", "ok"])
    t0 = time.monotonic()
    assert run(_client(srv.url, max_retries=2).chat(HI)).text == "hello"
    assert time.monotonic() - t0 < 10


def test_a_trickling_server_is_cut_off_at_request_timeout(server_factory) -> None:  # noqa: F811
    srv = server_factory(["trickle", "ok"])
    t0 = time.monotonic()
    res = run(_client(srv.url, max_retries=1, timeout_s=0.5).chat(HI))
    assert res.text == "hello" and res.attempts == 2 and time.monotonic() - t0 < 10


def test_a_malformed_usage_keeps_the_answer(server_factory) -> None:  # noqa: F811
    srv = server_factory(["nullusage"])
    res = run(_client(srv.url).chat(HI))
    assert res.text == "hello" and res.prompt_tokens == 0 and res.completion_tokens == 0


@pytest.mark.parametrize("failure", ["badlogprobs", "huge", "deep"])
def test_malformed_bodies_are_retried_and_named(server_factory, failure: str) -> None:  # noqa: F811
    srv = server_factory([failure, "ok"])
    assert run(_client(srv.url, max_retries=1, timeout_s=10).chat(HI, top_logprobs=2)).attempts == 2
    srv = server_factory([failure] * 3)
    with pytest.raises(RequestFailed, match="gave up after 2 attempts; last error: malformed response"):
        run(_client(srv.url, max_retries=1, timeout_s=10).chat(HI, top_logprobs=2))
