"""One served model as a plain Ray Serve deployment wrapping vLLM's ``AsyncLLM`` (``serving.backend: vllm``).

Why not ``ray.serve.llm`` by default: on a CPU node its machinery — a placement group per model, a separate engine
launch path, idle helper workers — cost minutes of start-up for engines that vLLM itself starts in seconds (measured
in ``benchmarks/bench_serving.py --startup``). This deployment is one Ray actor per replica with fractional CPUs and no
placement group; the replica builds the engine and vLLM's own OpenAI server app (``build_app`` + ``init_app_state``:
the same chat templates, structured outputs and logprobs as ``vllm serve``) and answers requests through that app
in-process. ``serving.backend: ray-serve-llm`` keeps ``ray.serve.llm`` for what it does better (tensor-parallel
GPU placement groups, its autoscaling and routing policies).

The weights are the deployment's ``user_config``, so a new target checkpoint is loaded by the running replica
(:meth:`VLLMServer.reconfigure`) without a new process. Requests reach a replica two ways: over HTTP through the
Serve proxy at ``/m/<model>`` (``__call__``), and from the router through a deployment handle
(:meth:`VLLMServer.handle_request`), which skips a second proxy hop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import types
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from arena_ops.config import EngineConfig

log = logging.getLogger(__name__)

DEPLOYMENT = "VLLMServer"


def engine_cli_args(model_id: str, model_dir: str, engine: EngineConfig) -> list[str]:
    """vLLM server arguments for one model."""
    args = [
        "--model", model_dir,
        "--served-model-name", model_id,
        "--dtype", engine.dtype,
        "--max-model-len", str(engine.max_model_len),
        "--tensor-parallel-size", str(engine.tensor_parallel_size),
        "--kv-cache-memory-bytes", str(int(engine.kv_cache_gib * 2**30)),
        "--disable-log-stats",
        "--disable-fastapi-docs",
    ]  # fmt: skip
    if engine.enforce_eager:
        args.append("--enforce-eager")
    # One worker runs inside the engine-core process (on CPU: in the replica itself, see ``inproc``); tensor
    # parallelism needs a process per worker.
    backend = "uni" if engine.tensor_parallel_size == 1 else "mp"
    args += ["--distributed-executor-backend", backend]
    return args


def inproc(engine: EngineConfig) -> bool:
    """Run the engine core in the replica's process (:mod:`arena_ops.serving.inproc`): ``engine_core: in-process``
    with one worker (tensor parallelism needs a process per worker)."""
    return engine.engine_core == "in-process" and engine.tensor_parallel_size == 1


def engine_env(engine: EngineConfig, cpu_threads_bind: str | None) -> dict[str, str]:
    """Environment the engine reads at start (vLLM reads ``VLLM_*`` lazily, so setting it in the replica works)."""
    if engine.device != "cpu":
        return {}
    env = {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(engine.kv_cache_gib + 0.5)))}
    if inproc(engine):
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if cpu_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
    return env


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=256, health_check_period_s=10, health_check_timeout_s=60)
class VLLMServer:
    """A vLLM engine and vLLM's OpenAI-compatible app, in one replica.

    The weights are the deployment's ``user_config`` (``{"path": ..., "tiny": ...}``): Serve calls
    :meth:`reconfigure` after start-up and again, on the running replicas, when only the weights change — a new
    target checkpoint swaps the engine inside the replica (vLLM stays imported) instead of restarting it.
    """

    def __init__(self, model_id: str, engine: dict[str, Any], cpu_threads_bind: str | None = None) -> None:
        """``engine``: the model's :class:`~arena_ops.config.EngineConfig` fields as the config states them."""
        self.timeline: dict[str, float] = {"replica_started": time.time()}
        self.model_id = model_id
        self.engine_config = EngineConfig(**engine)
        os.environ.update(engine_env(self.engine_config, cpu_threads_bind))
        import vllm.entrypoints.launchers.app  # noqa: F401 - the import is most of a CPU replica's start-up

        self.timeline["vllm_imported"] = time.time()
        self.engine: Any = None
        self.http: Any = None
        self.weights: dict[str, Any] | None = None
        self.model_dir: str | None = None
        self.failure: str | None = None
        self._inflight = 0
        self._ready = asyncio.Event()
        self._swap = asyncio.Lock()

    async def reconfigure(self, weights: dict[str, Any]) -> None:
        """Serve the weights ``{"path", "tiny"?, "s3"?}``. New weights of the model already loaded (same
        architecture, tokenizer and generation defaults: a fine-tuned checkpoint of it) are loaded into the running
        engine in place (vLLM's ``reload_weights``, under a second); anything else gets a new engine."""
        async with self._swap:
            if weights == self.weights:
                return
            if self.weights is not None and self.failure is None and _model_of(weights) == _model_of(self.weights):
                self.weights = weights  # only the S3 settings changed: they matter for the next fetch
                return
            self._ready.clear()  # new requests wait for the new weights
            while self._inflight:  # requests in flight finish on the old ones
                await asyncio.sleep(0.05)
            if self.weights is not None:
                self.timeline = {}  # a swap: the timeline of this load only
            self.timeline["load_started"] = time.time()
            try:
                model_dir = await asyncio.to_thread(self._fetch, weights)
                self.timeline["weights_local"] = time.time()
                in_place = self.engine is not None and same_model(self.model_dir, model_dir)
                if not (in_place and await self._reload(model_dir)):
                    await self._replace(model_dir)
            except Exception as exc:
                # Serve reports the failed update; requests meanwhile get a 503 naming the cause, not a hang.
                self.failure = f"{type(exc).__name__}: {exc}"
                raise
            else:
                self.weights, self.model_dir, self.failure = weights, model_dir, None
                log.info("model %s serves %s: %s", self.model_id, weights["path"], self.startup())
            finally:
                self._ready.set()

    def _fetch(self, weights: dict[str, Any]) -> str:
        from arena_ops.config import S3Config, StorageConfig, TinyModelConfig
        from arena_ops.serving.app import ServedModel, local_model_dir

        tiny = TinyModelConfig(**weights["tiny"]) if weights.get("tiny") else None
        # Credentials from the node's environment: Airflow connections do not exist on Ray nodes.
        store = StorageConfig(s3=S3Config(**{**(weights.get("s3") or {}), "conn_id": None}))
        return local_model_dir(ServedModel(self.model_id, weights["path"], self.engine_config, tiny), store)

    async def _reload(self, model_dir: str) -> bool:
        """New weights into the running engine; False (and a log line) when vLLM refuses them."""
        try:
            await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": model_dir})
            await self.engine.reset_prefix_cache()
            self.timeline["engine_ready"] = time.time()
            await self._first_token(self.http)
        except Exception as exc:
            log.warning("model %s: reloading %s in place failed (%s); a new engine", self.model_id, model_dir, exc)
            self.timeline.pop("engine_ready", None)
            return False
        return True

    async def _replace(self, model_dir: str) -> None:
        if self.engine is not None:  # memory first: two engines of one model may not fit
            await self.http.aclose()
            self.engine.shutdown()
            self.engine = self.http = self.weights = self.model_dir = None
            self.timeline["old_engine_stopped"] = time.time()
        self.engine, self.http = await self._load(model_dir)

    async def _load(self, model_dir: str) -> tuple[Any, Any]:
        import httpx
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.usage.usage_lib import UsageContext
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        args = make_arg_parser(FlexibleArgumentParser()).parse_args(
            engine_cli_args(self.model_id, model_dir, self.engine_config)
        )
        config = AsyncEngineArgs.from_cli_args(args).create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        options = {"usage_context": UsageContext.OPENAI_API_SERVER, "disable_log_stats": True}
        if inproc(self.engine_config):
            from arena_ops.serving.inproc import inproc_async_llm

            engine = await inproc_async_llm(config, **options)
        else:
            engine = AsyncLLM.from_vllm_config(config, **options)
        self.timeline["engine_ready"] = time.time()  # weights loaded, KV cache allocated, warm-up done (vLLM logs each)
        try:
            tasks = await engine.get_supported_tasks()
            app = build_app(args, tasks, engine.model_config)
            await init_app_state(engine, app.state, args, tasks)
            # vLLM's engine-error handler flips ``state.server.should_exit`` on uvicorn's server, which Serve replaces.
            app.state.server = types.SimpleNamespace()
            http = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://vllm", timeout=httpx.Timeout(None)
            )
            self.timeline["app_ready"] = time.time()
            await self._first_token(http)
        except BaseException:
            engine.shutdown()
            raise
        return engine, http

    async def _first_token(self, http: Any) -> None:
        first = await http.post(
            "/v1/completions", content=_one_token(self.model_id), headers={"content-type": "application/json"}
        )
        if first.status_code != 200:
            raise RuntimeError(f"model {self.model_id}: first request failed ({first.status_code}): {first.text[:500]}")
        self.timeline["first_token"] = time.time()

    async def handle_request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes, str]:
        """One OpenAI API call, answered by vLLM's app in this process: (status, body, content type)."""
        await self._ready.wait()
        if self.http is None or self.failure is not None:
            body = {"error": {"message": f"model {self.model_id} has no engine: {self.failure}", "code": 503}}
            return 503, json.dumps(body).encode(), "application/json"
        self._inflight += 1
        try:
            resp = await self.http.request(method, path, content=body or None, headers={"content-type": content_type})
        finally:
            self._inflight -= 1
        return resp.status_code, resp.content, resp.headers.get("content-type", "application/json")

    async def __call__(self, request: Request) -> Response:
        """HTTP through the Serve proxy: ``/m/<model>/v1/...`` (vLLM's OpenAI API) and ``/m/<model>/arena/loaded``,
        ``/m/<model>/arena/startup`` (:meth:`loaded`, :meth:`startup_timeline`: for ``serve up``, which asks over
        HTTP — a deployment handle in a short-lived driver leaves Ray threads behind)."""
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == "/arena/loaded":
            return Response(json.dumps(self.loaded()), media_type="application/json")
        if path == "/arena/startup":
            return Response(json.dumps(self.startup_timeline()), media_type="application/json")
        status, body, ctype = await self.handle_request(
            request.method, path, await request.body(), request.headers.get("content-type", "application/json")
        )
        return Response(body, status_code=status, media_type=ctype)

    def loaded(self) -> dict[str, Any] | None:
        """The weights this replica serves (``None`` while the first engine loads)."""
        return self.weights if self._ready.is_set() and self.failure is None else None

    def startup(self) -> dict[str, float]:
        """Seconds spent in each phase of the last (re)load, in order."""
        names = list(self.timeline)
        return {b: round(self.timeline[b] - self.timeline[a], 3) for a, b in zip(names, names[1:], strict=False)}

    def startup_timeline(self) -> dict[str, float]:
        """Timestamps (``time.time()``) of the last (re)load's phases: ``replica_started`` and ``vllm_imported``
        (first load only), ``load_started``, ``weights_local``, ``engine_ready``, ``app_ready``, ``first_token``."""
        return dict(self.timeline)

    async def check_health(self) -> None:
        if self.engine is not None:
            await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


# What must be equal for new weights to load into a running engine: the model's shape and everything vLLM read from
# the directory at start (tokenizer, chat template, default sampling parameters).
_SAME_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "chat_template.jinja", "chat_template.json", "generation_config.json",
)  # fmt: skip
# Keys that say how a checkpoint was saved or loaded, not what it is (a trainer saves use_cache false; a tokenizer
# loaded from a local directory saves local_files_only): a checkpoint differing only there is the same model.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path", "name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "local_files_only",
    "is_local",
}  # fmt: skip
_SETTINGS_FILES = {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}


def _model_of(weights: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``user_config`` that names the weights (``s3`` only says how to fetch them)."""
    return {k: v for k, v in weights.items() if k != "s3"}


def same_model(old_dir: str | None, new_dir: str) -> bool:
    """Whether ``new_dir`` holds new weights of the model in ``old_dir`` (see ``_SAME_FILES``); local directories
    only (a Hugging Face id always gets a new engine)."""
    if old_dir is None or not Path(old_dir, "config.json").is_file() or not Path(new_dir, "config.json").is_file():
        return False

    def config(d: str) -> dict[str, Any]:
        data = json.loads(Path(d, "config.json").read_text())
        return {k: v for k, v in data.items() if k not in _VOLATILE_CONFIG_KEYS}

    def content(d: str, name: str) -> Any:
        f = Path(d, name)
        if not f.is_file():
            return None
        if name in _SETTINGS_FILES:
            return {k: v for k, v in json.loads(f.read_text()).items() if k not in _VOLATILE_CONFIG_KEYS}
        return f.read_bytes()

    return config(old_dir) == config(new_dir) and all(content(old_dir, n) == content(new_dir, n) for n in _SAME_FILES)


def _one_token(model_id: str) -> bytes:
    return json.dumps({"model": model_id, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()


def build_engine_app(args: dict[str, Any]) -> Any:
    """Application builder (``import_path: arena_ops.serving.engine:build_engine_app``) of a declarative Serve
    config: what ``arena serve up`` deploys and the Helm chart's RayService renders. The deployment's options and its
    ``user_config`` (the weights) come from the config's ``deployments`` entry."""
    return VLLMServer.bind(args["model_id"], args.get("engine") or {}, args.get("cpu_threads_bind"))
