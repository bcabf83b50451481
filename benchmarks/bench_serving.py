"""Serving, measured side by side in one run. Three modes:

``throughput``  the same prompts through (a) ``vllm.LLM.chat`` in-process, (b) the Ray Serve deployment through the
                router via arena's async client at concurrency 32 and (c) straight to the model's own route (no router
                hop), interleaved for ``--rounds`` rounds. Each request generates exactly ``--max-tokens`` tokens
                (``min_tokens`` = ``max_tokens``), so all sides do the same work; deploy time is reported, not
                counted. Prints tok/s (medians) and the ratios b/a, c/a.
``startup``     ``serve up`` of a config from nothing (the local Ray head included) with each engine's start-up
                phases, then ``serve update-target`` to new weights twice (a tiny config gets new random weights;
                other targets a copy of their weights under a new path), then ``serve down``.
``battles``     battles per hour on a config's served models: one battle run (generation + judging, both games)
                over ``--prompts`` prompts of its corpus, serving already up or brought up first.

Run, e.g.::

    .venv/bin/python benchmarks/bench_serving.py throughput --model .arena/models/gemma-3-270m
    .venv/bin/python benchmarks/bench_serving.py throughput --model tiny --backend ray-serve-llm
    .venv/bin/python benchmarks/bench_serving.py startup --config configs/tiny.yaml
    .venv/bin/python benchmarks/bench_serving.py battles --config configs/tiny.yaml --prompts 24

``make demo-model`` prepares Gemma 3 270M; ``--device gpu`` on a CUDA machine. Every mode prints one JSON line last
(``--json``-style, for scripts such as ``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mt_bench_questions.jsonl"


def prompts(n: int) -> list[str]:
    if SHARED_PROMPTS.exists():
        qs = [json.loads(line)["turns"][0] for line in SHARED_PROMPTS.read_text().splitlines()]
    else:
        qs = [f"Write a short paragraph about topic number {i}." for i in range(n)]
    return [qs[i % len(qs)] for i in range(n)]


# throughput -----------------------------------------------------------------------------------------------------


def in_process(args: argparse.Namespace) -> list[float]:
    """(a): ``vllm.LLM`` (vLLM's defaults: its own engine-core process), after a warm-up: [seconds, tokens]."""
    from vllm import LLM, SamplingParams

    texts = prompts(args.prompts)
    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.device == "cpu",
        kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30),
        seed=0,
    )
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, min_tokens=args.max_tokens)
    chats = [[{"role": "user", "content": t}] for t in texts]
    llm.chat(chats[:2], params, use_tqdm=False)
    start = time.perf_counter()
    outs = llm.chat(chats, params, use_tqdm=False)
    return [time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)]


def bench_config(model: str, args: argparse.Namespace) -> Any:
    from arena_ops.config import ArenaConfig

    engine = {
        "device": args.device,
        "dtype": args.dtype,
        "max_model_len": args.max_model_len,
        "kv_cache_gib": args.kv_cache_gib,
        "enforce_eager": args.device == "cpu",
    }
    external = {"kind": "external", "base_url": "http://127.0.0.1:9/v1", "model": "unused"}
    return ArenaConfig.model_validate(
        {
            "flywheel": "bench",
            "storage": {"root": f"file://{tempfile.mkdtemp()}"},
            "models": {
                "target": {"name": "bench-model", "source": {"kind": "served", "path": model, "engine": engine}},
                "competitors": [{"name": "unused", "source": external}],
                "judge": {"name": "unused-judge", "source": external},
            },
            "serving": {"backend": args.backend, "port": args.port, "deploy_timeout_s": 900},
        }
    )


def through_http(base: str, texts: list[str], max_tokens: int, concurrency: int) -> tuple[float, int]:
    """(b)/(c): every prompt through arena's async client at ``concurrency``."""
    from arena_ops.config import SamplingConfig
    from arena_ops.serving.client import ChatClient

    sampling = SamplingConfig(temperature=0.7, max_tokens=max_tokens)

    async def run() -> tuple[float, int]:
        async with ChatClient(base, "bench-model", concurrency=concurrency, timeout_s=600) as c:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(c.chat([{"role": "user", "content": t}], sampling, extra={"min_tokens": max_tokens}) for t in texts)
            )
            return time.perf_counter() - start, sum(r.completion_tokens for r in results)

    return asyncio.run(run())


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """(a) before and after; (b) and (c) take turns for ``--rounds`` rounds in between. On a shared machine the
    speed drifts between minutes, so ratios compare medians of runs spread over the same stretch of time."""
    import statistics

    from arena_ops.serving import deploy
    from arena_ops.serving.app import model_route

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(args.kv_cache_gib))))
    model = args.model
    if model == "tiny":
        from arena_ops.tiny_model import build_tiny_chat_model

        model, args.dtype = str(build_tiny_chat_model(tempfile.mkdtemp(prefix="bench-tiny-"))), "float32"
    model = str(Path(model).resolve())
    texts = prompts(args.prompts)
    rates: dict[str, list[float]] = {"a": [], "b": [], "c": []}

    def in_process_rate() -> None:
        # In a child process, before and after serving runs: a live-but-idle vLLM engine (its worker polls for
        # work) slowed the served engine down, so they never coexist.
        cmd = [sys.executable, __file__, "in-process", "--model", model, "--prompts", str(args.prompts)]
        cmd += ["--max-tokens", str(args.max_tokens), "--dtype", args.dtype, "--device", args.device]
        cmd += ["--max-model-len", str(args.max_model_len), "--kv-cache-gib", str(args.kv_cache_gib)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"in-process run failed: {res.stderr[-3000:]}")
        (seconds, tokens), *_ = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("[")][-1:]
        rates["a"].append(tokens / seconds)
        print(f"in-process: {rates['a'][-1]:.1f} tok/s", flush=True)

    in_process_rate()
    cfg = bench_config(model, args)
    t0 = time.perf_counter()
    url = deploy.up(cfg)
    deploy_s = time.perf_counter() - t0
    try:
        through_http(url, texts[:2], 4, args.concurrency)  # warm-up
        for r in range(args.rounds):
            direct = url.removesuffix("/v1") + model_route("bench-model") + "/v1"  # the replica's own route
            for side, base in (("b", url), ("c", direct)):
                seconds, tokens = through_http(base, texts, args.max_tokens, args.concurrency)
                rates[side].append(tokens / seconds)
            print(f"round {r + 1}: router {rates['b'][-1]:.1f} tok/s, direct {rates['c'][-1]:.1f} tok/s", flush=True)
    finally:
        deploy.down(cfg)
    in_process_rate()
    a, b, c = (statistics.median(rates[k]) for k in "abc")
    print(f"model {model}, {args.prompts} prompts x {args.max_tokens} tokens, {args.device}, {args.rounds} rounds")
    print(f"(a) vllm.LLM.chat in-process                 {a:8.1f} tok/s (median)")
    print(f"(b) Ray Serve ({args.backend}) through the router, c={args.concurrency}  {b:8.1f} tok/s")
    print(f"(c) same, straight to the model's route      {c:8.1f} tok/s   (deploy {deploy_s:.0f} s, not counted)")
    print(f"ratio b/a = {b / a:.2f} (goal >= 0.9); c/a = {c / a:.2f}")
    return {
        "mode": "throughput",
        "model": model,
        "backend": args.backend,
        "device": args.device,
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "in_process_tok_s": round(a, 1),
        "router_tok_s": round(b, 1),
        "direct_tok_s": round(c, 1),
        "router_over_in_process": round(b / a, 3),
        "direct_over_in_process": round(c / a, 3),
        "deploy_s": round(deploy_s, 1),
    }


# startup --------------------------------------------------------------------------------------------------------


def startup(args: argparse.Namespace) -> dict[str, Any]:
    from arena_ops.config import load_config
    from arena_ops.serving import deploy
    from arena_ops.serving.app import served_models
    from arena_ops.tiny_model import build_tiny_chat_model

    cfg = load_config(args.config)
    deploy.down(cfg)  # from nothing: no Ray head, no Serve
    t0 = time.perf_counter()
    up = deploy.deploy(cfg)
    up_wall = time.perf_counter() - t0
    print(f"serve up {args.config}: {up_wall:.1f} s wall ({up.cluster_s:.1f} s Ray and Serve); per engine:")
    for model, phases in up.startup.items():
        print(f"  {model:<24} {phases}")
    (target,) = [m for m in served_models(cfg) if m.name == cfg.models.target.name]
    swaps = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    try:
        for i in range(args.swaps):
            if target.tiny is not None:
                new = build_tiny_chat_model(scratch / f"w{i}", arch=target.tiny.arch, seed=100 + i)
            else:  # the same weights under a new path: the engine still loads them anew
                new = scratch / f"w{i}"
                shutil.copytree(target.path, new)
            t = time.perf_counter()
            done = deploy.update_target(cfg, str(new))
            wall = time.perf_counter() - t
            swaps.append(round(wall, 2))
            print(f"update-target #{i + 1}: {wall:.1f} s wall; redeployed {done.deployed}; {done.startup}")
    finally:
        deploy.down(cfg)
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "mode": "startup",
        "config": str(args.config),
        "backend": cfg.serving.backend,
        "serve_up_s": round(up_wall, 1),
        "cluster_s": up.cluster_s,
        "engines": up.startup,
        "update_target_s": swaps,
    }


# battles --------------------------------------------------------------------------------------------------------


def battles(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa

    from arena_ops.battle.run import BattleRun, plan
    from arena_ops.config import load_config
    from arena_ops.data.pipeline import ensure_shards, read_shard
    from arena_ops.serving import deploy
    from arena_ops.store import ArtifactStore

    cfg = load_config(args.config)
    scratch = tempfile.mkdtemp(prefix="bench-battles-")
    cfg = cfg.model_copy(
        update={
            "storage": cfg.storage.model_copy(update={"root": f"file://{scratch}"}),
            "battle": cfg.battle.model_copy(update={"sample_limit": None}),  # --prompts decides
        }
    )
    store = ArtifactStore.from_config(cfg.storage)
    ensure_shards(cfg, store)
    shards = [read_shard(cfg, store, k) for k in range(cfg.data.num_shards)]
    rows = pa.concat_tables(shards).slice(0, args.prompts)
    t0 = time.perf_counter()
    deploy.up(cfg)
    up_s = time.perf_counter() - t0
    run = BattleRun(cfg, store, 0, "bench", plan(cfg, rows))
    try:
        t = time.perf_counter()
        asyncio.run(run.generate())
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        asyncio.run(run.judge())
        judge_s = time.perf_counter() - t
        summary = run.build()
    finally:
        if args.down:
            deploy.down(cfg)
        shutil.rmtree(scratch, ignore_errors=True)
    n = summary["battles"] + summary["invalid"]  # an invalid verdict cost the same generation and judging
    per_hour = n / ((gen_s + judge_s) / 3600)
    print(
        f"{args.config}: {n} battles over {len(rows)} prompts; generation {gen_s:.1f} s, judging {judge_s:.1f} s "
        f"(serving up in {up_s:.0f} s, not counted) -> {per_hour:,.0f} battles/hour"
    )
    return {
        "mode": "battles",
        "config": str(args.config),
        "prompts": len(rows),
        "battles": n,
        "generate_s": round(gen_s, 1),
        "judge_s": round(judge_s, 1),
        "battles_per_hour": round(per_hour),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput", help="router vs in-process vLLM on the same prompts")
    t.add_argument("--model", default=".arena/models/gemma-3-270m")
    t.add_argument("--backend", choices=["vllm", "ray-serve-llm"], default="vllm")
    t.add_argument("--prompts", type=int, default=64)
    t.add_argument("--max-tokens", type=int, default=64)
    t.add_argument("--concurrency", type=int, default=32)
    t.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    t.add_argument("--dtype", default="float32")  # as configs/demo.yaml: bf16 was 3.8x slower on this CPU
    t.add_argument("--max-model-len", type=int, default=1024)
    t.add_argument("--kv-cache-gib", type=float, default=1.0)
    t.add_argument("--port", type=int, default=8199)
    t.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("startup", help="serve up from nothing, update-target, serve down")
    s.add_argument("--config", default="configs/tiny.yaml")
    s.add_argument("--swaps", type=int, default=2)
    b = sub.add_parser("battles", help="battles per hour on a config's served models")
    b.add_argument("--config", default="configs/tiny.yaml")
    b.add_argument("--prompts", type=int, default=32)
    b.add_argument("--down", action="store_true", help="take serving down afterwards")
    i = sub.add_parser("in-process", help="(a) of throughput alone: prints [seconds, tokens]")
    for action in t._actions:
        if action.dest in ("model", "prompts", "max_tokens", "device", "dtype", "max_model_len", "kv_cache_gib"):
            i._add_action(action)
    args = ap.parse_args()
    modes = {"throughput": throughput, "startup": startup, "battles": battles, "in-process": in_process}
    result = modes[args.mode](args)
    print(json.dumps(result))
    report(result)


def report(r: dict[str, Any]) -> None:
    """The figures of a mode's result, for `make bench` (benchmarks/results.py)."""
    from results import emit

    if not isinstance(r, dict):  # in-process mode: a child's [seconds, tokens]
        return
    if r.get("mode") == "throughput":
        emit(f"Serve throughput through the router ({Path(r['model']).name}, {r['backend']}, {r['device']})",
             r["router_tok_s"], "tok/s", ratio=r["router_over_in_process"],
             baseline="offline vllm.LLM on the same prompts, same run")  # fmt: skip
    elif r.get("mode") == "startup":
        emit(f"`serve up` {r['config']} from nothing", r["serve_up_s"], "s",
             note=f"Ray and Serve {r['cluster_s']:.0f} s of it")  # fmt: skip
        if r["update_target_s"]:
            swap = sorted(r["update_target_s"])[len(r["update_target_s"]) // 2]
            emit(f"`serve update-target` {r['config']}", swap, "s", ratio=swap / r["serve_up_s"], better="lower",
                 baseline="`serve up` from nothing, same run")  # fmt: skip
    elif r.get("mode") == "battles":
        emit(f"battles per hour, {r['config']} ({r['prompts']} prompts)", r["battles_per_hour"], "battles/h",
             note=f"generation {r['generate_s']} s, judging {r['judge_s']} s")  # fmt: skip


if __name__ == "__main__":
    main()
