"""What atomic, hashed writes cost: ArtifactStore.write_table vs a plain pyarrow Parquet write, side by side; and
what verified reads cost: read_artifact_table with its sha256 check (the default) vs ``verify=False``.

Both write the same table with the same compression to the same filesystem in one run; the plain write is not
atomic (a reader can see a partial file) and records no sha256. Backends: a local directory and moto's S3 server
on loopback (start-up excluded). Run: ``.venv/bin/python benchmarks/bench_store.py [--rows N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def battles_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    models = np.array([f"model-{i}" for i in range(8)])
    return pa.table(
        {
            "prompt_id": [uuid.UUID(int=int(x)).hex for x in rng.integers(0, 2**62, rows)],
            "model_a": models[rng.integers(0, 8, rows)],
            "model_b": models[rng.integers(0, 8, rows)],
            "winner": np.array(["model_a", "model_b", "tie", "tie_bothbad"])[rng.integers(0, 4, rows)],
            "score_a": rng.integers(1, 11, rows).astype("float32"),
            "score_b": rng.integers(1, 11, rows).astype("float32"),
            "explanation": ["The first response is more accurate and detailed. " * 4] * rows,
        }
    )


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(store, table: pa.Table, repeat: int) -> tuple[float, float, float, float]:
    fs, base = store._fs, store._base  # the same filesystem object the store uses

    def plain() -> None:
        pq.write_table(table, f"{base}/plain/data.parquet", filesystem=fs, compression="zstd")

    def atomic() -> None:
        store.write_table("atomic/data.parquet", table)

    if store._local:
        os.makedirs(f"{base}/plain", exist_ok=True)
    plain(), atomic()  # warm-up
    with store.artifact_at("read/x") as w:
        w.write_table("data.parquet", table)

    def unverified() -> None:
        store.read_artifact_table("read/x", verify=False)

    def verified() -> None:
        store.read_artifact_table("read/x")

    unverified(), verified()
    return timed(plain, repeat), timed(atomic, repeat), timed(unverified, repeat), timed(verified, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from arena_ops.config import S3Config
    from arena_ops.store import ArtifactStore

    table = battles_table(args.rows)
    print(f"table: {args.rows:,} rows, {table.nbytes / 2**20:.1f} MiB in memory; median of {args.repeat} runs")
    with tempfile.TemporaryDirectory() as tmp:
        results = {"local": bench(ArtifactStore.from_uri(f"file://{tmp}"), table, args.repeat)}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server._server.server_address[:2]
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        store = ArtifactStore.from_uri("s3://bench/root", S3Config(endpoint_url=endpoint))
        results["s3 (moto, loopback)"] = bench(store, table, args.repeat)
    finally:
        server.stop()
    print(f"{'backend':<22}{'plain write s':>14}{'atomic+sha256 s':>17}{'ratio':>8}")
    for name, (plain, atomic, _, _) in results.items():
        print(f"{name:<22}{plain:>14.3f}{atomic:>17.3f}{atomic / plain:>8.2f}")
    print(f"{'backend':<22}{'read (verify=False) s':>22}{'read + sha256 s':>17}{'ratio':>8}")
    for name, (_, _, unverified, verified) in results.items():
        print(f"{name:<22}{unverified:>22.3f}{verified:>17.3f}{verified / unverified:>8.2f}")
    from results import emit

    for name, (plain, atomic, unverified, verified) in results.items():
        emit(f"store write of {args.rows:,} battles, {name}", atomic, "s", ratio=atomic / plain, better="lower",
             baseline="a plain pq.write_table", note="staged, sha256, atomic publish")  # fmt: skip
        emit(f"store read of {args.rows:,} battles, {name}", verified, "s", ratio=verified / unverified,
             better="lower", baseline="the same read without the sha256 check")  # fmt: skip


if __name__ == "__main__":
    main()
