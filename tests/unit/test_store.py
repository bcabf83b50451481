"""The artifact store on both backends: a local directory and an S3-protocol server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from arena_ops.config import S3Config
from arena_ops.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    MissingCredentialsError,
    NotCommittedError,
    StoreError,
    StoreURIError,
)
from arena_ops.store import MANIFEST, WRITER, ArtifactStore


def _battles(n: int = 5) -> pa.Table:
    return pa.table(
        {
            "model_a": [f"m{i % 3}" for i in range(n)],
            "model_b": ["ref"] * n,
            "winner": ["model_a", "model_b", "tie", "tie_bothbad", "model_a"][:n] * (n // 5 or 1),
        }
    )


def test_table_round_trip(store: ArtifactStore) -> None:
    table = _battles()
    entry = store.write_table("a/b/data.parquet", table)
    assert entry.rows == 5 and entry.bytes > 0 and len(entry.sha256) == 64
    assert store.exists("a/b/data.parquet")
    assert store.read_table("a/b/data.parquet").equals(table)
    assert store.read_table("a/b/data.parquet", columns=["winner"]).column_names == ["winner"]
    assert hashlib.sha256(store.get_bytes("a/b/data.parquet")).hexdigest() == entry.sha256


def test_json_and_bytes_round_trip(store: ArtifactStore) -> None:
    store.write_json("x/report.json", {"battles": 3, "models": ["a", "b"]})
    assert store.read_json("x/report.json") == {"battles": 3, "models": ["a", "b"]}
    store.put_bytes("x/blob.bin", b"\x00\x01")
    assert store.get_bytes("x/blob.bin") == b"\x00\x01"


def test_overwrite_replaces_object(store: ArtifactStore) -> None:
    store.write_json("k.json", {"v": 1})
    store.write_json("k.json", {"v": 2})
    assert store.read_json("k.json") == {"v": 2}


def test_missing_object_error_names_uri(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match=r"nope/data\.parquet: no such object"):
        store.read_table("nope/data.parquet")
    with pytest.raises(ArtifactNotFoundError, match="no such object"):
        store.get_bytes("nope.json")


def test_interrupted_table_write_leaves_no_object(store: ArtifactStore) -> None:
    schema = pa.schema([("x", pa.int64())])

    def batches():
        yield pa.record_batch([pa.array([1, 2, 3])], schema=schema)
        raise RuntimeError("killed mid-write")

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.write_table("it/data.parquet", reader)
    assert not store.exists("it/data.parquet")
    # No temp or partial objects are visible either.
    assert store.list("it", recursive=True) == []


def test_interrupted_write_keeps_previous_version(store: ArtifactStore) -> None:
    store.write_table("v/data.parquet", _battles())
    schema = pa.schema([("x", pa.int64())])

    def batches():
        yield pa.record_batch([pa.array([1])], schema=schema)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.write_table("v/data.parquet", pa.RecordBatchReader.from_batches(schema, batches()))
    assert store.read_table("v/data.parquet").equals(_battles())


def test_artifact_commit_writes_manifest_last(store: ArtifactStore) -> None:
    with store.artifact("fw", 2, "battles", "judged", meta={"judge": "j"}) as w:
        w.write_table("data.parquet", _battles())
        w.write_json("report.json", {"n": 5})
        # Before the block ends, readers see an uncommitted artifact.
        assert not store.is_committed(w.prefix)
        with pytest.raises(NotCommittedError, match="never committed"):
            store.manifest(w.prefix)
    prefix = "fw/iter=2/battles/judged"
    assert w.prefix == prefix and w.uri == f"{store.uri}/{prefix}"
    m = store.manifest(prefix)
    assert [f.path for f in m.files] == ["data.parquet", "report.json"]
    assert m.file("data.parquet").rows == 5 and m.rows == 5 and m.meta == {"judge": "j"}
    assert m.file("data.parquet").sha256 == hashlib.sha256(store.get_bytes(f"{prefix}/data.parquet")).hexdigest()
    assert store.read_artifact_table(prefix, verify=True).equals(_battles())


def test_failed_artifact_is_not_committed_and_rerun_commits(store: ArtifactStore) -> None:
    with pytest.raises(ValueError), store.artifact("fw", 0, "generate", "responses") as w:
        w.write_table("data.parquet", _battles())
        raise ValueError("engine died")
    prefix = "fw/iter=0/generate/responses"
    assert not store.is_committed(prefix)
    with pytest.raises(NotCommittedError):
        store.read_artifact_table(prefix)
    assert store.list_artifacts("fw", 0, "generate") == []
    assert store.list_artifacts("fw", 0, "generate", committed_only=False) == ["responses"]
    # The rerun writes the same keys and commits; nothing is duplicated.
    with store.artifact("fw", 0, "generate", "responses") as w:
        w.write_table("data.parquet", _battles())
    assert store.read_artifact_table(prefix).num_rows == 5
    assert sorted(store.list(prefix)) == [f"{prefix}/{MANIFEST}", f"{prefix}/{WRITER}", f"{prefix}/data.parquet"]


def test_rerun_that_fails_uncommits_the_old_version(store: ArtifactStore) -> None:
    with store.artifact("fw", 1, "train", "sft") as w:
        w.write_json("metrics.json", {"loss": 1.0})
    with pytest.raises(RuntimeError), store.artifact("fw", 1, "train", "sft") as w:
        raise RuntimeError("second attempt died")
    # The old manifest must not vouch for files the failed attempt may have replaced.
    assert not store.is_committed("fw/iter=1/train/sft")


def test_verify_detects_corruption(store: ArtifactStore) -> None:
    with store.artifact("fw", 0, "battles", "x") as w:
        w.write_table("data.parquet", _battles())
    store.write_table("fw/iter=0/battles/x/data.parquet", _battles(5).slice(0, 2))  # tampered behind its back
    with pytest.raises(IntegrityError, match="does not match manifest"):
        store.read_artifact_table("fw/iter=0/battles/x", verify=True)


def test_listing_iterations_and_stages(store: ArtifactStore) -> None:
    for it, stage in [(0, "generate"), (0, "battles"), (2, "battles"), (10, "train")]:
        with store.artifact("fw", it, stage, "a") as w:
            w.write_json("x.json", {})
    with store.artifact("other", 0, "battles", "a") as w:
        w.write_json("x.json", {})
    assert store.list_flywheels() == ["fw", "other"]
    assert store.list_iterations("fw") == [0, 2, 10]  # numeric, not lexicographic
    assert store.list_stages("fw", 0) == ["battles", "generate"]
    assert store.list_artifacts("fw", 10, "train") == ["a"]
    assert store.list_iterations("missing") == []


@pytest.mark.parametrize(
    ("flywheel", "iteration", "stage"),
    [("fw", -1, "s"), ("fw", "1", "s"), ("../up", 0, "s"), ("fw", 0, "a/b"), ("", 0, "s")],
)
def test_bad_artifact_keys_rejected(flywheel: str, iteration: int, stage: str) -> None:
    with pytest.raises(StoreURIError):
        ArtifactStore.artifact_key(flywheel, iteration, stage, "name")


def test_path_traversal_rejected(store: ArtifactStore) -> None:
    with pytest.raises(StoreURIError, match="bad key"):
        store.put_bytes("../escape.txt", b"x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/just/a/path", "expected a URI"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("s3://", "need a bucket"),
        ("file://relative/dir", "absolute path"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(StoreURIError, match=message):
        ArtifactStore.from_uri(uri, S3Config(anonymous=True))


def test_missing_s3_credentials_error_names_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(MissingCredentialsError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        ArtifactStore.from_uri("s3://bucket/prefix", S3Config(endpoint_url="http://127.0.0.1:1"))


def test_bad_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(StoreURIError, match="endpoint_url 'minio:9000'"):
        ArtifactStore.from_uri("s3://bucket", S3Config(endpoint_url="minio:9000"))


@pytest.mark.integration
def test_missing_bucket_is_reported(s3_server: str, s3_bucket: str) -> None:
    store = ArtifactStore.from_uri(f"s3://{s3_bucket}-missing/root", S3Config(endpoint_url=s3_server))
    with pytest.raises(StoreError, match="bucket does not exist"):
        store.put_bytes("x.json", b"{}")


@pytest.mark.integration
def test_credentials_from_airflow_connection(s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and endpoint from an Airflow connection (here defined through Airflow's env-var backend)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": s3_server}}
    monkeypatch.setenv("AIRFLOW_CONN_ARENA_TEST_S3", json.dumps(conn))
    store = ArtifactStore.from_uri(f"s3://{s3_bucket}/root", S3Config(conn_id="arena_test_s3"))
    store.write_json("hello.json", {"ok": True})
    assert store.read_json("hello.json") == {"ok": True}


def test_unknown_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
    with pytest.raises(MissingCredentialsError, match="'no_such_conn' not found"):
        ArtifactStore.from_uri("s3://bucket", S3Config(conn_id="no_such_conn"))


@pytest.mark.integration
def test_s3_store_is_visible_to_boto3(s3_server: str, s3_bucket: str) -> None:
    """Objects land under the documented layout, as any other S3 client sees them."""
    import boto3

    store = ArtifactStore.from_uri(f"s3://{s3_bucket}/root", S3Config(endpoint_url=s3_server))
    with store.artifact("fw", 3, "battles", "judged") as w:
        w.write_table("data.parquet", _battles())
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    judged = "root/fw/iter=3/battles/judged"
    assert keys == [f"{judged}/_MANIFEST.json", f"{judged}/_WRITER", f"{judged}/data.parquet"]


# Hostile input: verified reads by default, corrupt manifests, names checked in one place, writes stay in the root --


def test_reads_verify_by_default(store: ArtifactStore) -> None:
    with store.artifact("fw", 0, "battles", "y") as w:
        w.write_table("data.parquet", _battles())
    store.write_table("fw/iter=0/battles/y/data.parquet", _battles(5).slice(0, 2))  # altered after the commit
    with pytest.raises(IntegrityError, match="does not match manifest"):
        store.read_artifact_table("fw/iter=0/battles/y")
    assert store.read_artifact_table("fw/iter=0/battles/y", verify=False).num_rows == 2  # the trusted hot path


def test_a_corrupt_manifest_is_not_a_commit(store: ArtifactStore) -> None:
    with store.artifact("fw", 0, "battles", "z") as w:
        w.write_table("data.parquet", _battles())
    store.put_bytes(f"fw/iter=0/battles/z/{MANIFEST}", b'{"files": [{"path": "data.par')  # cut short
    assert not store.is_committed("fw/iter=0/battles/z")
    assert store.list_artifacts("fw", 0, "battles") == []
    with pytest.raises(NotCommittedError, match="corrupt.*rerun the task"):
        store.read_artifact_table("fw/iter=0/battles/z")


@pytest.mark.parametrize(
    ("flywheel", "name", "match"),
    [
        ("fw", "run\n", "bad name"),
        ("fw", "a" * 129, "bad name"),
        ("fw\n", "run", "bad flywheel"),
        ("fw", "", "bad name"),
        ("fw", "../x", "bad name"),
        ("fw", "_x", "bad name"),
    ],
)
def test_names_are_checked_in_one_place(flywheel: str, name: str, match: str) -> None:
    with pytest.raises(StoreURIError, match=match):
        ArtifactStore.artifact_key(flywheel, 0, "battles", name)


@pytest.mark.parametrize(
    ("file", "match"),
    [
        (f"{MANIFEST}/", "reserved"),
        (f"{MANIFEST}/x", "reserved"),
        ("/etc/passwd", "absolute"),
        ("a\nb.json", "control character"),
        ("x" * 250 + ".json", "longer than"),
    ],
)
def test_hostile_file_names_are_refused_before_any_write(tmp_path: Path, file: str, match: str) -> None:
    store = ArtifactStore.from_uri(f"file://{tmp_path}/root")
    with pytest.raises(StoreURIError, match=match), store.artifact("fw", 0, "battles", "x") as w:
        w.put_bytes(file, b"{}")
    assert not store.is_committed("fw/iter=0/battles/x")


def test_writes_never_follow_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = ArtifactStore.from_uri(f"file://{tmp_path}/root")
    (tmp_path / "root" / "fw").mkdir(parents=True)
    (tmp_path / "root" / "fw" / "iter=0").symlink_to(outside)
    with pytest.raises(StoreURIError, match="outside the store root"):
        store.put_bytes("fw/iter=0/battles/x/data.json", b"{}")
    (tmp_path / "root" / "link.json").symlink_to(outside / "target.json")
    with pytest.raises(StoreURIError, match="outside the store root"):
        store.put_bytes("link.json", b"{}")
    assert list(outside.iterdir()) == []


def test_stale_staging_files_are_swept_by_the_next_write(tmp_path: Path) -> None:
    store = ArtifactStore.from_uri(f"file://{tmp_path}/root")
    store.put_bytes("fw/data/x/a.json", b"{}")
    stale = tmp_path / "root/fw/data/x" / f".a.json.tmp-{'0' * 32}"
    fresh = tmp_path / "root/fw/data/x" / f".b.json.tmp-{'1' * 32}"  # a live writer's: kept
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    store.put_bytes("fw/data/x/a.json", b"{}")
    assert not stale.exists() and fresh.exists()


class _FailingUploads(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose disk is full: multipart uploads start, every part and every PutObject fails.

    A hand-written fault (moto cannot fail one S3 call on demand); the success path runs on SeaweedFS and moto above.
    """

    completed: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self._reply(500, b"<Error><Code>InternalError</Code><Message>no space left on device</Message></Error>")

    def do_POST(self) -> None:
        if self.path.endswith("?uploads"):
            self._reply(200, b"<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>")
        else:
            type(self).completed.append(self.path)
            self._reply(500, b"<Error><Code>InternalError</Code><Message>no space left on device</Message></Error>")

    def do_HEAD(self) -> None:
        self._reply(404)

    do_GET = do_HEAD

    def do_DELETE(self) -> None:
        self._reply(204)


@pytest.mark.parametrize("size", [1_000, 12_000_000], ids=["put-object", "multipart"])
def test_a_failed_s3_upload_raises(size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow.fs.copy_files logged this failure and returned; a write that did not land must raise."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingUploads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    try:
        s3 = S3Config(endpoint_url=f"http://127.0.0.1:{server.server_port}")
        store = ArtifactStore.from_uri("s3://bucket/root", s3)
        local = tmp_path / "weights.bin"
        local.write_bytes(os.urandom(size))
        with pytest.raises(StoreError, match=r"s3://bucket/root/w/weights.bin: .*no space left on device"):
            store.put_file("w/weights.bin", local)
        with pytest.raises(StoreError, match="no space left on device"):
            store.put_bytes("w/small.json", b"{}")
        assert not _FailingUploads.completed  # a failed part never completes the upload with the rest
    finally:
        server.shutdown()


def test_an_uploaded_file_is_complete_when_put_file_returns(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "weights.bin"
    data = os.urandom(6_000_000)  # above the S3 client's single-request size: a multipart upload
    local.write_bytes(data)
    entry = store.put_file("w/weights.bin", local)
    assert entry.bytes == len(data) and store.get_bytes("w/weights.bin") == data


def test_read_rows_reads_only_the_row_groups_that_hold_them(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    import arena_ops.store as store_module

    monkeypatch.setattr(store_module, "ROW_GROUP_ROWS", 4)
    store.write_table("t/data.parquet", pa.table({"n": list(range(30)), "s": [str(k) for k in range(30)]}))
    with store._fs.open_input_file(store._full("t/data.parquet")) as f:
        assert pq.ParquetFile(f).metadata.num_row_groups == 8
    for rows in ([0], [5, 6], [3, 4, 12, 29], list(range(30)), []):
        assert store.read_rows("t/data.parquet", rows, columns=["n"]).column("n").to_pylist() == rows
    assert store.read_rows("t/data.parquet", [7], columns=["s", "n"]).to_pylist() == [{"s": "7", "n": 7}]
    with pytest.raises(IndexError, match="rows 29…30 outside 0…29"):
        store.read_rows("t/data.parquet", [29, 30])
    with pytest.raises(ArtifactNotFoundError):
        store.read_rows("t/none.parquet", [0])
