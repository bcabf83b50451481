"""The chat client against a real loopback HTTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from arena_ops.config import ExternalSource, ModelSpec, SamplingConfig, ServingConfig
from arena_ops.errors import ServingError
from arena_ops.serving.client import (
    ChatClient,
    RequestFailed,
    RequestRejected,
    StructuredOutput,
    resolve_api_key,
)

OK = {
    "choices": [
        {
            "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop",
            "logprobs": {
                "content": [
                    {
                        "token": "hello",
                        "logprob": -0.1,
                        "top_logprobs": [{"token": "hello", "logprob": -0.1}, {"token": "hi", "logprob": -2.4}],
                    }
                ]
            },
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}


class FlakyServer:
    """Answers each POST with the next scripted behaviour; records bodies, headers and peak concurrency."""

    def __init__(self, script: list[str], delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.delay_s = delay_s
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.headers: list[dict] = []
        self.active = self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # an OpenAI-compatible server: the API lives under /v1
                if self.path != "/v1/models":
                    return self._send(404, b'{"error": "Not Found"}')
                self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.paths.append(self.path)
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "Not Found"}')
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.pop(0) if server.script else "ok"
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                try:
                    time.sleep(server.delay_s)
                    if action == "ok":
                        self._send(200, json.dumps(OK).encode())
                    elif action == "429":
                        self._send(429, b'{"error": "slow down"}', {"Retry-After": "0.05"})
                    elif action == "500":
                        self._send(500, b"internal error")
                    elif action == "400":
                        self._send(400, b'{"error": "bad request: unknown field"}')
                    elif action == "hang":
                        time.sleep(1.0)
                        self._send(200, json.dumps(OK).encode())
                    elif action == "garbage":
                        self._send(200, b"<html>not json</html>")
                    elif action == "nochoices":
                        self._send(200, b'{"choices": []}')
                    elif action == "retry-nan":  # second hostile pass: once slept forever
                        self._send(429, b'{"error": "slow down"}', {"Retry-After": "nan"})
                    elif action == "trickle":  # a byte every 0.1 s: no single read ever times out
                        body = json.dumps(OK).encode()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        for k in range(len(body)):
                            self.wfile.write(body[k : k + 1])
                            self.wfile.flush()
                            time.sleep(0.1)
                    elif action == "nullusage":
                        self._send(
                            200, json.dumps({**OK, "usage": {"prompt_tokens": None, "completion_tokens": "x"}}).encode()
                        )
                    elif action == "badlogprobs":
                        bad = {**OK["choices"][0], "logprobs": {"content": [{"token": "x"}]}}
                        self._send(200, json.dumps({**OK, "choices": [bad]}).encode())
                    elif action == "huge":
                        self._send(200, b'{"choices": [{"message": {"content": "' + b"a" * (17 << 20) + b'"}}]}')
                    elif action == "deep":
                        self._send(200, b"[" * 100_000 + b"]" * 100_000)
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.root}/v1"  # the base URL as the OpenAI SDK (and the README) write it
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory() -> Iterator:
    started: list[FlakyServer] = []

    def make(script: list[str], delay_s: float = 0.0) -> FlakyServer:
        s = FlakyServer(script, delay_s).__enter__()
        started.append(s)
        return s

    yield make
    for s in started:
        s.__exit__()


def _client(url: str, **kw) -> ChatClient:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout_s", 0.5)
    return ChatClient(url, "m", **kw)


def run(coro):
    return asyncio.run(coro)


def test_success_parses_text_usage_and_logprobs(server_factory) -> None:
    srv = server_factory(["ok"])

    async def go():
        async with _client(srv.url, api_key="sk-test") as c:
            return await c.chat([{"role": "user", "content": "hi"}], SamplingConfig(max_tokens=7), top_logprobs=2)

    res = run(go())
    assert res.text == "hello" and res.finish_reason == "stop" and res.completion_tokens == 1
    assert res.logprobs[0].top == {"hello": -0.1, "hi": -2.4} and res.attempts == 1
    body = srv.bodies[0]
    assert body["max_tokens"] == 7 and body["logprobs"] is True and body["top_logprobs"] == 2 and "seed" not in body
    assert srv.headers[0]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("failure", ["429", "500", "hang", "garbage", "nochoices"])
def test_retries_then_succeeds(server_factory, failure: str) -> None:
    srv = server_factory([failure, failure, "ok"])
    res = run(_client(srv.url, max_retries=3).chat([{"role": "user", "content": "hi"}]))
    assert res.text == "hello" and res.attempts == 3 and len(srv.bodies) == 3


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("500", "HTTP 500: internal error"),
        ("hang", "(ReadTimeout|no complete response within request_timeout_s)"),
        ("garbage", "malformed response"),
        ("429", "HTTP 429"),
    ],
)
def test_gives_up_with_a_clear_error(server_factory, failure: str, message: str) -> None:
    srv = server_factory([failure] * 10)
    with pytest.raises(RequestFailed, match=rf"m at {srv.url}/chat/completions: gave up after 3 attempts.*{message}"):
        run(_client(srv.url, max_retries=2).chat([{"role": "user", "content": "hi"}]))
    assert len(srv.bodies) == 3


def test_client_errors_are_not_retried(server_factory) -> None:
    srv = server_factory(["ok", "400", "ok"])
    client = _client(srv.url)
    run(client.chat([{"role": "user", "content": "hi"}]))
    with pytest.raises(RequestRejected, match="HTTP 400.*not retried") as info:
        run(client.chat([{"role": "user", "content": "hi"}]))
    assert len(srv.bodies) == 2 and info.value.status == 400


def test_a_refusal_before_any_answer_is_not_an_items_outcome(server_factory) -> None:
    """Until the endpoint has answered once, a 4xx may be the endpoint's fault, not the item's: a plain failure
    (retried on rerun), never recorded as the item's result."""
    srv = server_factory(["400"])
    with pytest.raises(RequestFailed, match="refused before this endpoint answered") as info:
        run(_client(srv.url).chat([{"role": "user", "content": "hi"}]))
    assert not isinstance(info.value, RequestRejected)


def test_connection_refused_is_retried_then_reported() -> None:
    with pytest.raises(RequestFailed, match="ConnectError"):
        run(_client("http://127.0.0.1:9", max_retries=1).chat([{"role": "user", "content": "hi"}]))


def test_concurrency_bound_is_respected(server_factory) -> None:
    srv = server_factory([], delay_s=0.05)

    async def go():
        async with _client(srv.url, concurrency=3, timeout_s=5) as c:
            await asyncio.gather(*(c.chat([{"role": "user", "content": str(i)}]) for i in range(12)))

    run(go())
    assert len(srv.bodies) == 12 and srv.peak == 3


def test_structured_output_request_shapes(server_factory) -> None:
    srv = server_factory(["ok", "ok", "ok"])
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}

    async def go():
        async with _client(srv.url) as c:
            for so in (
                StructuredOutput(json_schema=schema),
                StructuredOutput(regex=r"\d+"),
                StructuredOutput(choice=["A", "B"]),
            ):
                await c.chat([{"role": "user", "content": "x"}], structured=so)

    run(go())
    assert srv.bodies[0]["response_format"]["json_schema"]["schema"] == schema
    assert srv.bodies[1]["structured_outputs"] == {"regex": r"\d+"}
    assert srv.bodies[2]["structured_outputs"] == {"choice": ["A", "B"]}
    with pytest.raises(ServingError, match="need a vLLM endpoint"):
        _client(srv.url, vllm_extensions=False).request_body([], SamplingConfig(), StructuredOutput(regex="x"))
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutput(regex="a", choice=["b"])


def test_ready_waits_and_times_out(server_factory) -> None:
    srv = server_factory([])
    run(_client(srv.url).ready(timeout_s=2))
    with pytest.raises(ServingError, match=r"other at .* not ready after 0s: model 'other' not listed"):
        run(ChatClient(srv.url, "other").ready(timeout_s=0.2, interval_s=0.05))


def test_external_api_key_from_env_and_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    src = ExternalSource(kind="external", base_url="https://api.example/v1", model="gpt-4o", api_key_env="ARENA_KEY")
    monkeypatch.delenv("ARENA_KEY", raising=False)
    with pytest.raises(ServingError, match="env var ARENA_KEY"):
        resolve_api_key(src, "gpt-4o")
    monkeypatch.setenv("ARENA_KEY", "sk-1")
    assert resolve_api_key(src, "gpt-4o") == "sk-1"
    spec = ModelSpec(name="gpt-4o", source=src)
    client = ChatClient.for_model(spec, ServingConfig())
    assert client.base_url == "https://api.example/v1" and client.model == "gpt-4o" and not client.vllm_extensions


def test_external_api_key_from_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ARENA_OPENAI", json.dumps({"conn_type": "http", "password": "sk-conn"}))
    src = ExternalSource(kind="external", base_url="https://x/v1", model="m", conn_id="arena_openai")
    assert resolve_api_key(src, "m") == "sk-conn"


def test_external_base_url_as_the_readme_writes_it(server_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """README / configs/cluster.yaml: ``base_url: https://host/v1`` — what the OpenAI SDK means by base_url."""
    srv = server_factory(["ok"])
    monkeypatch.setenv("ARENA_KEY", "sk-1")
    src = ExternalSource(kind="external", base_url=srv.url, model="m", api_key_env="ARENA_KEY")

    async def go():
        async with ChatClient.for_model(ModelSpec(name="gpt", source=src), ServingConfig()) as c:
            await c.ready(timeout_s=5)
            return await c.chat([{"role": "user", "content": "hi"}])

    assert run(go()).text == "hello"
    assert srv.paths == ["/v1/chat/completions"] * 2  # the readiness probe (one token), then the request
    assert srv.bodies[0]["max_tokens"] == 1


@pytest.mark.parametrize(
    ("base", "model", "message"),
    [
        ("{root}", "m", r"HTTP 404.*no /v1: did you mean http://127\.0\.0\.1:\d+/v1\?"),
        ("{root}/v1/v1", "m", r"HTTP 404.*Is base_url right\?"),
        ("{root}/v1", "gpt-5", r"model 'gpt-5' not listed \(serving \['m'\]\)"),
    ],
)
def test_a_misconfigured_external_endpoint_fails_the_readiness_check_at_once(
    server_factory, base: str, model: str, message: str
) -> None:
    srv = server_factory([])
    src = ExternalSource(kind="external", base_url=base.format(root=srv.root), model=model)
    client = ChatClient.for_model(ModelSpec(name="judge", source=src), ServingConfig())
    start = time.monotonic()
    with pytest.raises(ServingError, match=f"not usable: {message}"):
        run(client.ready(timeout_s=30))
    assert time.monotonic() - start < 5  # waiting cannot fix it: no 30 s wait


def test_a_served_route_that_404s_is_waited_for(server_factory) -> None:
    """A served model's route 404s until Ray Serve has deployed it: that is waited on, not final."""
    srv = server_factory([])
    with pytest.raises(ServingError, match="not ready after 0s: HTTP 404"):
        run(ChatClient(srv.root, "m").ready(timeout_s=0.3, interval_s=0.05))


def test_requests_all_refused_the_same_way_stop_the_run(server_factory) -> None:
    srv = server_factory([])

    async def go(client: ChatClient) -> list[object]:
        async with client:
            return await asyncio.gather(
                *(client.chat([{"role": "user", "content": str(i)}]) for i in range(10)), return_exceptions=True
            )

    # the wrong base URL: every request 404s; after 4 the client stops calling them per-item outcomes
    outcomes = run(go(_client(srv.root, max_consecutive_rejections=4, concurrency=1)))
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds[:3] == ["RequestFailed"] * 3 and set(kinds[3:]) == {"EndpointFailing"}, kinds
    assert "all refused with HTTP 404" in str(outcomes[3]) and "did you mean" in str(outcomes[3])
    assert not isinstance(outcomes[3], RequestFailed)  # not an item's outcome: it ends the run

    # a success in between resets the count: item-level refusals (e.g. a prompt too long) stay per item
    srv = server_factory(["400", "400", "400", "ok", "400", "400", "400"])
    outcomes = run(go(_client(srv.url, max_consecutive_rejections=4, concurrency=1)))
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds[:4] == ["RequestFailed"] * 3 + ["ChatResult"] and kinds[4:7] == ["RequestRejected"] * 3, kinds
