"""The one network client for models: async OpenAI chat completions, for served and external endpoints alike.

httpx rather than the ``openai`` SDK: we need vLLM's request extensions (``structured_outputs`` with regex/choice),
our own retry policy (exponential backoff with full jitter, ``Retry-After`` honoured, malformed bodies retried) and
errors that name the model, the URL and what came back — all thin on top of httpx, awkward through the SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from arena_ops.config import ExternalSource, ModelSpec, SamplingConfig, ServingConfig
from arena_ops.errors import EndpointFailing, ServingError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: Refusals that are about the request itself (malformed, too long, unprocessable): the item's own outcome. Others
#: (401, 403, 404, …) are about the endpoint or its configuration and are never recorded as an item's result.
ITEM_STATUS = {400, 413, 422}
MAX_BODY_BYTES = 16 << 20  # a chat completion is kilobytes; a server streaming without end is cut off here
MAX_RETRY_AFTER_S = 60.0


class RequestFailed(ServingError):
    """A request still failed after all retries (or failed in a way retrying cannot fix)."""


class RequestRejected(RequestFailed):
    """The server refused the request itself (HTTP 4xx other than 408/409/425/429, e.g. a prompt longer than the
    model's context): asking again cannot help, so callers may record it as a per-item outcome."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True)
class StructuredOutput:
    """At most one constraint: a JSON schema, a regex or a fixed choice of strings."""

    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.json_schema, self.regex, self.choice)) != 1:
            raise ValueError("StructuredOutput takes exactly one of json_schema, regex, choice")


class ChatClient:
    """Chat completions against one model id at one OpenAI-compatible base URL.

    ``base_url`` means what it means to the OpenAI SDK: the API root with its version, e.g. ``https://api.openai.com/v1``
    or ``http://host:8000/v1`` for vLLM; requests go to ``{base_url}/chat/completions`` and ``{base_url}/models``.
    ``external``: an endpoint we do not deploy, so a refusal at the readiness check is final (a served model's route
    may 404 while it is being deployed). A refusal of the request itself (HTTP 400/413/422, e.g. a prompt longer than
    the context) is the item's own outcome (:class:`RequestRejected`), but only once the endpoint has answered
    something — :meth:`ready` makes sure it has; other refusals (401, 403, 404…) and those before any answer are a
    plain :class:`RequestFailed`, never recorded as the item's result. After
    ``max_consecutive_rejections`` refusals with the same HTTP status and no success in between, requests raise
    :class:`EndpointFailing`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        vllm_extensions: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        external: bool = False,
        max_consecutive_rejections: int = 20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.external = external
        self.max_consecutive_rejections = max_consecutive_rejections
        self._rejected: tuple[int, int, str] = (0, 0, "")  # (status, consecutive count, last message)
        self.answered = False  # has any chat request succeeded?
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.vllm_extensions = vllm_extensions
        self._sem = asyncio.Semaphore(concurrency)
        self.timeout_s = timeout_s  # a deadline for the whole request: httpx's timeout is per read, and a server
        # trickling a byte at a time never trips it
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )

    @classmethod
    def for_model(cls, spec: ModelSpec, serving: ServingConfig, concurrency: int = 16, **kwargs: Any) -> ChatClient:
        """A client for a served model (through the Ray Serve ingress) or an external endpoint."""
        src = spec.source
        if isinstance(src, ExternalSource):
            key = resolve_api_key(src, spec.name)
            return cls(src.base_url, src.model, key, concurrency, vllm_extensions=False, external=True, **kwargs)
        if src.kind == "served":
            return cls(serving_base_url(serving), spec.name, None, concurrency, **kwargs)
        raise ServingError(f"model {spec.name!r} has recorded responses; use RecordedResponses, not a chat client")

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingConfig,
        structured: StructuredOutput | None = None,
        top_logprobs: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
        if structured is not None:
            if structured.json_schema is not None:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": structured.json_schema, "strict": True},
                }
            elif not self.vllm_extensions:
                raise ServingError(f"{self.model}: regex/choice constraints need a vLLM endpoint; use a JSON schema")
            elif structured.regex is not None:
                body["structured_outputs"] = {"regex": structured.regex}
            else:
                body["structured_outputs"] = {"choice": structured.choice}
        body.update(extra or {})
        return body

    async def chat(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingConfig | None = None,
        structured: StructuredOutput | None = None,
        top_logprobs: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion, retried on 429/5xx, timeouts, connection errors and malformed responses.

        ``extra`` adds vendor fields to the request body (e.g. vLLM's ``min_tokens``).
        """
        body = self.request_body(messages, sampling or SamplingConfig(), structured, top_logprobs, extra)
        async with self._sem:
            return await self._post_with_retries("chat/completions", body)

    async def _post_with_retries(self, path: str, body: dict[str, Any]) -> ChatResult:
        url = f"{self.base_url}/{path}"
        last = ""
        for attempt in range(1, self.max_retries + 2):
            start = time.perf_counter()
            retry_after: float | None = None
            try:
                resp = await asyncio.wait_for(self._post(path, body), self.timeout_s)
                if resp.status_code == 200:
                    result = _parse(resp, time.perf_counter() - start, attempt)
                    self._rejected, self.answered = (0, 0, ""), True
                    return result
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRY_STATUS:
                    self._note_rejection(resp.status_code, f"{self.model} at {url}: {last}")
                    if resp.status_code not in ITEM_STATUS:
                        hint = _hint(self.base_url, resp.status_code) if self.external else ""
                        raise RequestFailed(f"{self.model} at {url}: {last} (not retried){hint}")
                    if not self.answered:
                        raise RequestFailed(
                            f"{self.model} at {url}: {last} (refused before this endpoint answered any request: not "
                            "taken as this item's result)"
                        )
                    raise RequestRejected(f"{self.model} at {url}: {last} (not retried)", resp.status_code)
                retry_after = _retry_after(resp)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                last = f"no complete response within request_timeout_s ({self.timeout_s:g} s)"
            except _Malformed as exc:
                last = f"malformed response: {exc}"
            if attempt <= self.max_retries:
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                log.warning("%s: attempt %d failed (%s); retrying in %.2fs", self.model, attempt, last, delay)
                await asyncio.sleep(delay)
        raise RequestFailed(f"{self.model} at {url}: gave up after {self.max_retries + 1} attempts; last error: {last}")

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST, reading at most :data:`MAX_BODY_BYTES` of the response."""
        async with self._http.stream("POST", path, json=body) as resp:
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    raise _Malformed(f"response body larger than {MAX_BODY_BYTES} bytes")
        return httpx.Response(resp.status_code, headers=resp.headers, content=bytes(data), request=resp.request)

    async def _probe(self) -> tuple[str, bool]:
        """One chat request of one token: ``("", False)`` when it succeeded, else (what came back, final?)."""
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
        resp = await self._http.post("chat/completions", json=body)
        if resp.status_code == 200:
            try:
                _parse(resp, 0.0, 1)
            except _Malformed as exc:
                return f"malformed chat response: {exc}", False
            self.answered = True
            return "", False
        final = self.external and resp.status_code not in RETRY_STATUS
        return f"HTTP {resp.status_code}: {resp.text[:200]}" + (
            _hint(self.base_url, resp.status_code) if final else ""
        ), final

    def _note_rejection(self, status: int, message: str) -> None:
        same, count, _ = self._rejected
        count = count + 1 if status == same else 1
        self._rejected = (status, count, message)
        if count >= self.max_consecutive_rejections:
            raise EndpointFailing(
                f"{message}\n— the last {count} requests were all refused with HTTP {status} and none succeeded; "
                f"stopping instead of recording each as a failed item.{_hint(self.base_url, status)}"
            )

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^(attempt-1))].
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))

    async def ready(self, timeout_s: float = 60.0, interval_s: float = 1.0) -> None:
        """Wait until ``GET {base_url}/models`` lists this model and a one-token chat request succeeds; raise
        ServingError after ``timeout_s``. For an external endpoint an answer that cannot change by waiting (HTTP 4xx
        other than 408/429, or a list without the model) fails at once, naming the URL, what came back and what to
        fix."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.base_url}/models"
        last = "no answer yet"
        while True:
            final = False
            try:
                resp = await self._http.get("models")
                if resp.status_code == 200:
                    ids = [m.get("id") for m in resp.json().get("data", [])]
                    if self.model in ids:
                        last, final = await self._probe()
                        if not last:
                            return
                        url = f"{self.base_url}/chat/completions"
                    else:
                        last, final = f"model {self.model!r} not listed (serving {ids[:20]})", self.external
                else:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    final = self.external and resp.status_code not in RETRY_STATUS
                    if final:
                        last += _hint(self.base_url, resp.status_code)
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if final:
                raise ServingError(f"{self.model} at {url}: not usable: {last}")
            if time.monotonic() >= deadline:
                raise ServingError(f"{self.model} at {url} not ready after {timeout_s:.0f}s: {last}")
            await asyncio.sleep(interval_s)


class _Malformed(Exception):
    pass


def _hint(base_url: str, status: int) -> str:
    if status == 404:
        root = "" if httpx.URL(base_url).path.rstrip("/").endswith("/v1") else " (it has no /v1: did you mean "
        root += f"{base_url}/v1?)" if root else ""
        return (
            f" Is base_url right{root}? It is the OpenAI SDK's base URL, with the API version: requests go to "
            f"{base_url}/chat/completions."
        )
    if status in (401, 403):
        return " Check the API key (the model's api_key_env or conn_id)."
    return ""


def _parse(resp: httpx.Response, latency: float, attempts: int) -> ChatResult:
    """The completion's text, usage and logprobs; anything malformed where it matters (the text, logprobs that were
    asked for) is :class:`_Malformed` (retried), never a raw TypeError. A malformed ``usage`` only loses the counts."""
    try:
        data = json.loads(resp.content)
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"content is {type(text).__name__}")
        logprobs = None
        lp = choice.get("logprobs")
        if lp:
            content = lp["content"]
            if content is not None:
                logprobs = [
                    TokenLogprob(
                        str(t["token"]),
                        _finite(t["logprob"]),
                        {str(x["token"]): _finite(x["logprob"]) for x in t.get("top_logprobs") or []},
                    )
                    for t in content
                ]
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        raise _Malformed(f"{type(exc).__name__}: {str(exc)[:200]}; body starts {resp.text[:200]!r}") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatResult(
        text=text,
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        latency_s=latency,
        attempts=attempts,
        logprobs=logprobs,
    )


def _finite(x: Any) -> float:
    v = float(x)
    if math.isnan(v) or v == math.inf:
        raise ValueError(f"logprob {x!r}")
    return v


def _count(x: Any) -> int:
    """A usage count; 0 where the server sent none, null, or nonsense (the text is still the answer)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        return 0
    return int(x)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds the server asked to wait (at most :data:`MAX_RETRY_AFTER_S`); None when absent or not a finite,
    non-negative number (``nan`` once made the client sleep forever)."""
    value = resp.headers.get("retry-after")
    try:
        v = float(value) if value is not None else None
    except ValueError:
        return None
    return None if v is None or not math.isfinite(v) or v < 0 else min(v, MAX_RETRY_AFTER_S)


def serving_base_url(serving: ServingConfig) -> str:
    """The OpenAI base URL (with ``/v1``) of the models Ray Serve hosts."""
    prefix = serving.route_prefix.rstrip("/")
    return f"http://{serving.host}:{serving.port}{prefix}/v1"


def resolve_api_key(src: ExternalSource, name: str) -> str | None:
    """The API key of an external endpoint: its env var, else its Airflow connection's password."""
    if src.api_key_env:
        key = os.environ.get(src.api_key_env)
        if key:
            return key
        if not src.conn_id:
            raise ServingError(f"model {name!r}: env var {src.api_key_env} (its API key) is not set")
    if src.conn_id:
        from arena_ops.airflow.connections import get_connection

        try:
            password = get_connection(src.conn_id).password
        except Exception as exc:  # Airflow's not-found exceptions vary by version
            raise ServingError(f"model {name!r}: Airflow connection {src.conn_id!r} unavailable: {exc}") from exc
        if not password:
            raise ServingError(f"model {name!r}: Airflow connection {src.conn_id!r} has no password (API key)")
        return password
    return None
