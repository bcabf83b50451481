"""One writer of an artifact, as a process of its own (the two-writer test): ``python -m
tests.unit.hostile.store_writer URI ENDPOINT KEY NAME CONTENT SYNC ROLE``. Exits 0 when its commit stands (or found the
same content committed), 3 on StoreConflictError (printing the message)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyarrow as pa

from arena_ops.config import S3Config
from arena_ops.errors import StoreConflictError
from arena_ops.store import ArtifactStore


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} after 120 s"
        time.sleep(0.05)


def main(uri: str, endpoint: str, key: str, name: str, content: str, sync: str, role: str) -> int:
    store = ArtifactStore.from_uri(uri, S3Config(endpoint_url=endpoint) if endpoint else None)
    d = Path(sync)
    table = pa.table({"x": [content] * 3})
    try:
        if role == "first":  # writes part of the artifact, lets the other write and commit all of it, then goes on
            with store.artifact_at(key, meta={"writer": name}) as w:
                w.write_json("summary.json", {"by": content})
                (d / "first-wrote").touch()
                wait_for(d / "second-done")
                w.write_table("data.parquet", table)
        elif role == "first-whole":  # writes all of it, lets the other write and commit, then commits
            with store.artifact_at(key, meta={"writer": "same"}) as w:
                w.write_json("summary.json", {"by": content})
                w.write_table("data.parquet", table)
                (d / "first-wrote").touch()
                wait_for(d / "second-done")
        else:
            wait_for(d / "first-wrote")
            with store.artifact_at(key, meta={"writer": name if role == "second" else "same"}) as w:
                w.write_json("summary.json", {"by": content})
                w.write_table("data.parquet", table)
            (d / "second-done").touch()
    except StoreConflictError as exc:
        print(exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
