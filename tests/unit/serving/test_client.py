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
from arena_ops.serving.client import ChatClient, RequestFailed, RequestRejected, StructuredOutput, resolve_api_key

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

            def do_GET(self) -> None:
                self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
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
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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
        ("hang", "ReadTimeout"),
        ("garbage", "malformed response"),
        ("429", "HTTP 429"),
    ],
)
def test_gives_up_with_a_clear_error(server_factory, failure: str, message: str) -> None:
    srv = server_factory([failure] * 10)
    with pytest.raises(
        RequestFailed, match=rf"m at {srv.url}/v1/chat/completions: gave up after 3 attempts.*{message}"
    ):
        run(_client(srv.url, max_retries=2).chat([{"role": "user", "content": "hi"}]))
    assert len(srv.bodies) == 3


def test_client_errors_are_not_retried(server_factory) -> None:
    srv = server_factory(["400", "ok"])
    with pytest.raises(RequestRejected, match="HTTP 400.*not retried") as info:
        run(_client(srv.url).chat([{"role": "user", "content": "hi"}]))
    assert len(srv.bodies) == 1 and info.value.status == 400


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
    with pytest.raises(ServingError, match=r"'?other'? at .* not ready after 0s: model not listed"):
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
