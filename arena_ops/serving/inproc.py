"""vLLM's ``AsyncLLM`` with its engine core in this process (no engine-core or worker subprocess).

Why: ``AsyncLLM`` always runs the engine core in a separate process, and on CPU also the model worker; inside a Ray
actor vLLM must *spawn* them, so each re-imports torch and vLLM — three processes and three imports per model, the
bulk of a CPU engine's start-up (measured: see ``benchmarks/bench_serving.py --startup``). vLLM's offline ``LLM``
already runs the engine core in-process (``InprocClient``, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``); this module drives
that same client from asyncio: every engine-core call runs on one dedicated thread (the engine is not thread-safe;
the model's OpenMP threads are bound from that thread), and the event loop only waits on it. Everything above the
engine core — request processing, detokenisation, vLLM's OpenAI server — is vLLM's own ``AsyncLLM``.

Used by :mod:`arena_ops.serving.engine` on CPU for single-worker engines (``engine.inproc``); GPU and tensor-parallel
engines keep vLLM's multiprocess core, where a busy model step must not stall the HTTP event loop.
"""

from __future__ import annotations

import asyncio
import os
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

from vllm.config import VllmConfig
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.core_client import EngineCoreClient, InprocClient


class AsyncInprocClient(InprocClient):
    """The in-process engine-core client with the async methods ``AsyncLLM`` calls, run on one thread."""

    def __init__(self, *args: Any, thread: ThreadPoolExecutor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = thread
        self._work = asyncio.Event()
        self.resources = types.SimpleNamespace(engine_dead=False)  # AsyncLLM.errored reads it
        self.engine_ranks_managed = [0]
        self._closed = False

    async def _on_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def get_output_async(self) -> Any:
        while not self.engine_core.scheduler.has_requests():
            await self._work.wait()  # set by add_request_async; an idle engine costs nothing
            self._work.clear()
        try:
            return await self._on_thread(self.get_output)
        except BaseException:
            self.resources.engine_dead = True
            raise

    async def add_request_async(self, request: Any) -> None:
        await self._on_thread(self.add_request, request)
        self._work.set()

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        await self._on_thread(self.abort_requests, request_ids)

    async def get_supported_tasks_async(self) -> Any:
        return await self._on_thread(self.get_supported_tasks)

    async def reset_mm_cache_async(self) -> None:
        await self._on_thread(self.reset_mm_cache)

    async def reset_prefix_cache_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self._on_thread(lambda: self.reset_prefix_cache(*args, **kwargs))

    async def collective_rpc_async(
        self, method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        return await self._on_thread(lambda: self.collective_rpc(method, timeout, args, kwargs))

    async def reset_encoder_cache_async(self) -> None:
        await self._on_thread(self.reset_encoder_cache)

    def shutdown(self, timeout: float | None = None) -> None:
        if self._closed:  # AsyncLLM shuts its client down again when it is collected
            return
        self._closed = True
        self._thread.submit(super().shutdown, timeout).result()
        self._thread.shutdown(wait=False)


async def inproc_async_llm(vllm_config: VllmConfig, **kwargs: Any) -> AsyncLLM:
    """An ``AsyncLLM`` whose engine core is an :class:`AsyncInprocClient`, built on that client's thread. The
    config must come from engine args created with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (a one-process executor)."""
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
        raise RuntimeError("set VLLM_ENABLE_V1_MULTIPROCESSING=0 before building the engine config")
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-engine-core")

    def client(vllm_config: VllmConfig, executor_class: Any, log_stats: bool, **_: Any) -> AsyncInprocClient:
        return AsyncInprocClient(vllm_config, executor_class, log_stats, thread=thread)

    def build() -> AsyncLLM:
        # AsyncLLM has no hook for its engine-core client: swap the factory for this one construction only.
        with mock.patch.object(EngineCoreClient, "make_async_mp_client", staticmethod(client)):
            return AsyncLLM.from_vllm_config(vllm_config, **kwargs)

    # Built on the engine thread (not in the event loop): the model's threads are bound there and it is where
    # every later engine-core call runs.
    return await asyncio.get_running_loop().run_in_executor(thread, build)
