"""Second hostile pass, store: two processes writing one artifact must never leave a committed mix of both. The one
that started last owns it; the other stops with StoreConflictError — or, when the other committed exactly its
content, finds nothing to do. Real processes, on file:// and on S3 servers (moto and SeaweedFS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from arena_ops.store import ArtifactStore

REPO = Path(__file__).resolve().parents[3]


def writers(request: pytest.FixtureRequest, store: ArtifactStore, tmp_path: Path, roles: list) -> list:
    backend = request.node.callspec.params["store"]
    endpoint = {"local": "", "moto": "s3_server", "seaweedfs": "seaweedfs"}[backend]
    endpoint = request.getfixturevalue(endpoint) if endpoint else ""
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.unit.hostile.store_writer",
                store.uri,
                endpoint,
                "fw/iter=0/x/art",
                name,
                content,
                str(sync),
                role,
            ],
            cwd=REPO,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name, content, role in roles
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return out


def test_two_writers_of_one_artifact_never_commit_a_mix(request, store: ArtifactStore, tmp_path: Path) -> None:
    first, second = writers(request, store, tmp_path, [("A", "from A", "first"), ("B", "from B", "second")])
    assert second.returncode == 0, second.stdout
    assert first.returncode == 3 and "another writer started on this artifact" in first.stdout, first.stdout
    m = store.manifest("fw/iter=0/x/art")
    assert m.meta == {"writer": "B"}
    assert store.read_json("fw/iter=0/x/art/summary.json") == {"by": "from B"}
    assert store.read_artifact_table("fw/iter=0/x/art", verify=True)["x"].to_pylist() == ["from B"] * 3


def test_a_writer_that_lost_to_the_same_content_finds_nothing_to_do(request, store, tmp_path: Path) -> None:
    first, second = writers(request, store, tmp_path, [("A", "same", "first-whole"), ("B", "same", "second-same")])
    assert second.returncode == 0 and first.returncode == 0, (first.stdout, second.stdout)
    assert store.read_artifact_table("fw/iter=0/x/art", verify=True)["x"].to_pylist() == ["same"] * 3
