"""Serving overhead: the same prompts through (a) ``vllm.LLM.chat`` in-process and (b) the Ray Serve application
(router → per-model OpenAI ingress → vLLM) via arena's async client at concurrency 32. Prints tokens/s of each and
the ratio b/a. Each request generates exactly ``--max-tokens`` tokens (``min_tokens`` = ``max_tokens``), so both
sides do the same work. Deploy time is reported but excluded from the throughput.

Run: ``.venv/bin/python benchmarks/bench_serving.py --model .arena/models/gemma-3-270m`` (``make demo-model``
prepares it) or ``--model tiny`` for a tiny random model. ``--device gpu`` on a CUDA machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

SHARED_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mt_bench_questions.jsonl"


def prompts(n: int) -> list[str]:
    if SHARED_PROMPTS.exists():
        qs = [json.loads(line)["turns"][0] for line in SHARED_PROMPTS.read_text().splitlines()]
    else:
        qs = [f"Write a short paragraph about topic number {i}." for i in range(n)]
    return [qs[i % len(qs)] for i in range(n)]


def in_process(model: str, texts: list[str], max_tokens: int, args: argparse.Namespace) -> tuple[float, int]:
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.device == "cpu",
        kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30),
        seed=0,
    )
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, min_tokens=max_tokens)
    chats = [[{"role": "user", "content": t}] for t in texts]
    llm.chat(chats[:2], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.chat(chats, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    del llm
    return elapsed, tokens


def served(model: str, texts: list[str], max_tokens: int, args: argparse.Namespace):
    from arena_ops.config import ArenaConfig, SamplingConfig
    from arena_ops.serving import deploy
    from arena_ops.serving.app import model_route
    from arena_ops.serving.client import ChatClient

    engine = {
        "device": args.device,
        "dtype": args.dtype,
        "max_model_len": args.max_model_len,
        "kv_cache_gib": args.kv_cache_gib,
        "enforce_eager": args.device == "cpu",
    }
    external = {"kind": "external", "base_url": "http://127.0.0.1:9/v1", "model": "unused"}
    cfg = ArenaConfig.model_validate(
        {
            "flywheel": "bench",
            "storage": {"root": f"file://{tempfile.mkdtemp()}"},
            "models": {
                "target": {"name": "bench-model", "source": {"kind": "served", "path": model, "engine": engine}},
                "competitors": [{"name": "unused", "source": external}],
                "judge": {"name": "unused-judge", "source": external},
            },
            "serving": {"port": args.port, "deploy_timeout_s": 900},
        }
    )
    t0 = time.perf_counter()
    url = deploy.up(cfg)
    deploy_s = time.perf_counter() - t0
    sampling = SamplingConfig(temperature=0.7, max_tokens=max_tokens)

    async def run(base: str) -> tuple[float, int]:
        async with ChatClient(base, "bench-model", concurrency=args.concurrency, timeout_s=600) as c:
            await asyncio.gather(*(c.chat([{"role": "user", "content": t}], sampling) for t in texts[:2]))
            start = time.perf_counter()
            results = await asyncio.gather(
                *(c.chat([{"role": "user", "content": t}], sampling, extra={"min_tokens": max_tokens}) for t in texts)
            )
            return time.perf_counter() - start, sum(r.completion_tokens for r in results)

    try:
        elapsed, tokens = asyncio.run(run(url))
        direct = asyncio.run(run(url + model_route("bench-model")))  # skipping the router hop
    finally:
        deploy.down(cfg)
    return elapsed, tokens, deploy_s, direct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=".arena/models/gemma-3-270m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--dtype", default="float32")  # as configs/demo.yaml: bf16 is slow on CPUs without AVX512-BF16
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--port", type=int, default=8199)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(args.kv_cache_gib))))
    model = args.model
    if model == "tiny":
        from arena_ops.tiny_model import build_tiny_chat_model

        model, args.dtype = str(build_tiny_chat_model(tempfile.mkdtemp(prefix="bench-tiny-"))), "float32"
    model = str(Path(model).resolve())
    texts = prompts(args.prompts)

    a_s, a_tok = in_process(model, texts, args.max_tokens, args)
    b_s, b_tok, deploy_s, (c_s, c_tok) = served(model, texts, args.max_tokens, args)
    a_rate, b_rate = a_tok / a_s, b_tok / b_s
    print(f"model {model}, {args.prompts} prompts x {args.max_tokens} tokens, device {args.device}")
    print(f"(a) vllm.LLM.chat in-process      {a_tok:>6} tokens in {a_s:7.2f} s = {a_rate:8.1f} tok/s")
    print(
        f"(b) Ray Serve via client (c={args.concurrency}) {b_tok:>6} tokens in {b_s:7.2f} s = {b_rate:8.1f} tok/s"
        f"  (deploy {deploy_s:.0f} s, excluded)"
    )
    print(
        f"(c) same, straight to the model's app (no router hop) {c_tok} tokens in {c_s:.2f} s = {c_tok / c_s:.1f} tok/s"
    )
    print(f"ratio b/a = {b_rate / a_rate:.2f} (goal >= 0.8); c/a = {c_tok / c_s / a_rate:.2f}")


if __name__ == "__main__":
    main()
