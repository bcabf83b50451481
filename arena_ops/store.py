"""The artifact store: the only module that does storage I/O.

Backends: ``file://`` (a local directory — the embedded default) and ``s3://`` (AWS S3, MinIO, Ceph or any
S3-compatible endpoint). Both go through ``pyarrow.fs``: one C++ filesystem API for both, Parquet streams
without copies, and a current, well-kept S3 client bundled with pyarrow (a bare ``s3fs`` requirement resolved
to a 2019 release on these machines). boto3 is only needed for bucket administration.

Layout, deterministic and run-scoped::

    {root}/{flywheel}/iter={i}/{stage}/{name}/<files>
    {root}/{flywheel}/iter={i}/{stage}/{name}/_MANIFEST.json   <- written last: the commit marker
    {root}/{flywheel}/data/{name}/<files>                      <- iteration-independent datasets (corpus, shards)

Atomicity: every object is first written completely to a local staging file and only then published (a
same-directory ``rename`` locally; one upload to S3, where an object becomes visible only when its upload
completes), so a reader never sees half an object. An artifact is *committed* when its manifest, which lists
each file with its sha256, size and row count, exists; readers of artifacts refuse uncommitted ones.
A rerun of an interrupted write simply overwrites the same keys and commits.

Integrity: :meth:`ArtifactStore.read_artifact_table` checks the file's sha256 against the manifest by default (a
file altered after its commit raises :class:`IntegrityError`; ``verify=False`` skips it on trusted hot paths — the
cost is one SHA-256 pass, measured in ``benchmarks/bench_store.py``). A manifest that cannot be parsed means "not
committed". Every key part is checked once, in :meth:`ArtifactStore._full`: no empty, ``.``/``..``, control
characters or parts over :data:`MAX_PART`; local writes never leave the root (a symlink out of it is refused), and a
write sweeps the staging files that an interrupted earlier write left next to its target.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from arena_ops.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    MissingCredentialsError,
    NotCommittedError,
    StoreConflictError,
    StoreError,
    StoreURIError,
)

if TYPE_CHECKING:
    from arena_ops.config import S3Config, StorageConfig

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
WRITER = "_WRITER"  # the token of the artifact's current writer: the last to start owns it (ArtifactWriter)
_ITER_RE = re.compile(r"^iter=(\d+)$")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")  # fullmatch: "run\n" is not a name
MAX_PART = 200  # bytes per key part: file systems refuse 255+, S3 keys are 1024 in all
_STAGING = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")
_STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class FileEntry:
    """One committed file of an artifact."""

    path: str
    sha256: str
    bytes: int
    rows: int | None = None


@dataclass
class Manifest:
    """The commit record of an artifact directory."""

    files: list[FileEntry]
    meta: dict[str, Any] = field(default_factory=dict)
    committed_at: str = ""
    version: int = 1

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.path == name:
                return entry
        raise ArtifactNotFoundError(f"manifest lists no file {name!r} (has: {[f.path for f in self.files]})")

    @property
    def rows(self) -> int:
        return sum(f.rows or 0 for f in self.files)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        return cls(
            files=[FileEntry(**f) for f in raw["files"]],
            meta=raw.get("meta", {}),
            committed_at=raw.get("committed_at", ""),
            version=raw.get("version", 1),
        )


# Rows per Parquet row group: the unit a reader can skip to (the Arena view reads one page of battles by reading only
# its row groups). Smaller groups cost a little compression and metadata; benchmarks/bench_ui.py measures the read.
ROW_GROUP_ROWS = 65_536
_UPLOAD_CHUNK = 8 << 20


class ArtifactStore:
    """Read and write objects and committed artifacts under one root URI."""

    def __init__(self, fs: pafs.FileSystem, base: str, uri: str) -> None:
        self._fs = fs
        self._base = base.rstrip("/")
        self.uri = uri.rstrip("/")
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._verified: set[tuple[str, str, int, int | None]] = set()  # versions of files checked by verify()

    # Construction ------------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, storage: StorageConfig) -> ArtifactStore:
        return cls.from_uri(storage.root, storage.s3)

    @classmethod
    def from_uri(cls, uri: str, s3: S3Config | None = None) -> ArtifactStore:
        """Open ``file:///abs/dir`` or ``s3://bucket[/prefix]``."""
        scheme, sep, rest = uri.partition("://")
        if not sep:
            raise StoreURIError(f"{uri!r}: expected a URI like file:///abs/dir or s3://bucket/prefix")
        if scheme == "file":
            if not rest.startswith("/"):
                raise StoreURIError(f"{uri!r}: file:// URIs must hold an absolute path (file:///abs/dir)")
            os.makedirs(rest, exist_ok=True)
            return cls(pafs.LocalFileSystem(), rest, uri)
        if scheme == "s3":
            bucket = rest.split("/", 1)[0]
            if not bucket:
                raise StoreURIError(f"{uri!r}: s3:// URIs need a bucket (s3://bucket/prefix)")
            return cls(_s3_filesystem(s3, uri), rest, uri)
        raise StoreURIError(f"{uri!r}: unsupported scheme {scheme!r}; use file:// or s3://")

    # Keys ----------------------------------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        """The one place keys are checked: every part non-empty, not ``.``/``..``, no control characters, at most
        :data:`MAX_PART` bytes."""
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StoreURIError(f"{self.uri}: bad key {key!r} (empty, or contains '.' or '..')")
        for p in parts:
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in p):
                raise StoreURIError(f"{self.uri}: bad key {key!r}: control character in {p!r}")
            if len(p.encode()) > MAX_PART:
                raise StoreURIError(f"{self.uri}: bad key: part {p[:40]!r}… is longer than {MAX_PART} bytes")
        return f"{self._base}/{'/'.join(parts)}"

    def key_uri(self, key: str) -> str:
        return f"{self.uri}/{key.strip('/')}"

    @staticmethod
    def artifact_key(flywheel: str, iteration: int, stage: str, name: str) -> str:
        """The run-scoped prefix of one artifact: ``{flywheel}/iter={i}/{stage}/{name}``."""
        if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
            raise StoreURIError(f"iteration must be a non-negative int, got {iteration!r}")
        for what, value in (("flywheel", flywheel), ("stage", stage), ("name", name)):
            _check_name(what, value)
        return f"{flywheel}/iter={iteration}/{stage}/{name}"

    @staticmethod
    def dataset_key(flywheel: str, name: str) -> str:
        """The prefix of an iteration-independent dataset (corpus, shards, test sets): ``{flywheel}/data/{name}``."""
        for what, value in (("flywheel", flywheel), ("name", name)):
            _check_name(what, value)
        return f"{flywheel}/data/{name}"

    # Objects -------------------------------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self._info(key).type == pafs.FileType.File

    def put_bytes(self, key: str, data: bytes) -> FileEntry:
        with self._staged(key) as tmp:
            Path(tmp).write_bytes(data)
        return FileEntry(key, hashlib.sha256(data).hexdigest(), len(data))

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> FileEntry:
        """Publish a local file (streamed, never read whole into memory: model weights)."""
        digest, size = _sha256_file(str(local_path))
        with self._staged(key) as tmp:
            shutil.copyfile(local_path, tmp)
        return FileEntry(key, digest, size)

    def get_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Download one object to a local file (streamed)."""
        try:
            pafs.copy_files(
                self._full(key),
                str(local_path),
                source_filesystem=self._fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{self.key_uri(key)}: no such object") from exc
        except OSError as exc:
            raise self._wrap(exc, key) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            with self._fs.open_input_stream(self._full(key)) as f:
                return f.read()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{self.key_uri(key)}: no such object") from exc
        except OSError as exc:
            raise self._wrap(exc, key) from exc

    def write_json(self, key: str, obj: Any) -> FileEntry:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def write_table(self, key: str, table: pa.Table | pa.RecordBatchReader) -> FileEntry:
        """Write Parquet atomically; a table or a stream of batches (an error mid-stream publishes nothing)."""
        rows = 0
        with self._staged(key) as tmp:
            with pq.ParquetWriter(tmp, table.schema, compression="zstd") as writer:
                batches = table.to_batches() if isinstance(table, pa.Table) else table
                for batch in batches:
                    writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                    rows += batch.num_rows
            digest, size = _sha256_file(tmp)
        return FileEntry(key, digest, size, rows)

    def read_table(self, key: str, columns: list[str] | None = None, dictionary: list[str] | None = None) -> pa.Table:
        """One Parquet object; ``dictionary`` names string columns to keep dictionary-encoded (few distinct values)."""
        try:
            return pq.read_table(self._full(key), filesystem=self._fs, columns=columns, read_dictionary=dictionary)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{self.key_uri(key)}: no such object") from exc
        except OSError as exc:
            raise self._wrap(exc, key) from exc

    def read_rows(self, key: str, rows: Sequence[int], columns: list[str] | None = None) -> pa.Table:
        """Rows ``rows`` (ascending positions in the file) of one Parquet object, reading only the row groups that
        hold them: how the Arena view pages through hundreds of thousands of battles."""
        try:
            with self._fs.open_input_file(self._full(key)) as f:
                parquet = pq.ParquetFile(f)
                meta = parquet.metadata
                starts = [0]
                for g in range(meta.num_row_groups):
                    starts.append(starts[-1] + meta.row_group(g).num_rows)
                if rows and (rows[0] < 0 or rows[-1] >= starts[-1]):
                    raise IndexError(f"{self.key_uri(key)}: rows {rows[0]}…{rows[-1]} outside 0…{starts[-1] - 1}")
                groups = sorted({bisect.bisect_right(starts, r) - 1 for r in rows})
                if groups:
                    table = parquet.read_row_groups(groups, columns=columns)
                else:
                    table = parquet.schema_arrow.empty_table()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{self.key_uri(key)}: no such object") from exc
        except OSError as exc:
            raise self._wrap(exc, key) from exc
        if not groups:
            return table.select(columns) if columns else table
        # Positions in the concatenation of the groups read.
        offsets, at = {}, 0
        for g in groups:
            offsets[g] = at - starts[g]
            at += starts[g + 1] - starts[g]
        return table.take([r + offsets[bisect.bisect_right(starts, r) - 1] for r in rows])

    def list(self, prefix: str = "", recursive: bool = False) -> list[str]:
        """Keys (relative to the root) directly under ``prefix`` (directories end with '/')."""
        base = self._full(prefix) if prefix.strip("/") else self._base
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))
        except OSError as exc:
            raise self._wrap(exc, prefix) from exc
        out = []
        for info in infos:
            rel = info.path[len(self._base) :].lstrip("/")
            out.append(rel + "/" if info.type == pafs.FileType.Directory else rel)
        return sorted(out)

    def delete(self, key: str) -> None:
        """Remove one object (absent is fine)."""
        if self.exists(key):
            self._fs.delete_file(self._full(key))

    def delete_prefix(self, prefix: str) -> None:
        full = self._full(prefix)
        if self._info(prefix).type == pafs.FileType.Directory:
            self._fs.delete_dir(full)

    # Artifacts -----------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def artifact(
        self, flywheel: str, iteration: int, stage: str, name: str, meta: dict[str, Any] | None = None
    ) -> Iterator[ArtifactWriter]:
        """Write an artifact; the manifest is written only if the block finishes without an exception."""
        with self.artifact_at(self.artifact_key(flywheel, iteration, stage, name), meta) as writer:
            yield writer

    @contextlib.contextmanager
    def artifact_at(self, prefix: str, meta: dict[str, Any] | None = None) -> Iterator[ArtifactWriter]:
        """Like :meth:`artifact`, at a prefix built by :meth:`artifact_key` or :meth:`dataset_key`."""
        writer = ArtifactWriter(self, prefix, dict(meta or {}))
        # Ownership first (a writer that started earlier and is still writing sees it lost, and stops), then a rerun
        # replaces an earlier (possibly interrupted) attempt wholesale: the old commit marker goes before any file,
        # so no reader can pair the old manifest with new files.
        self.put_bytes(f"{prefix}/{WRITER}", writer.token.encode())
        if self.exists(f"{prefix}/{MANIFEST}"):
            self._fs.delete_file(self._full(f"{prefix}/{MANIFEST}"))
        yield writer
        writer._commit()

    def is_committed(self, prefix: str) -> bool:
        """Its manifest exists and parses (a corrupt manifest is not a commit)."""
        try:
            self.manifest(prefix)
        except (ArtifactNotFoundError, NotCommittedError):
            return False
        return True

    def manifest(self, prefix: str) -> Manifest:
        prefix = prefix.rstrip("/")
        try:
            raw = self.get_bytes(f"{prefix}/{MANIFEST}")
        except ArtifactNotFoundError:
            if self._info(prefix).type == pafs.FileType.Directory:
                raise NotCommittedError(
                    f"{self.key_uri(prefix)}: artifact exists but was never committed (no {MANIFEST}); "
                    "its writer was interrupted or is still running"
                ) from None
            raise ArtifactNotFoundError(f"{self.key_uri(prefix)}: no such artifact") from None
        try:
            return Manifest.from_json(raw.decode())
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise NotCommittedError(
                f"{self.key_uri(prefix)}: its {MANIFEST} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); "
                "the artifact counts as not committed — rerun the task that writes it"
            ) from None

    def read_artifact_table(self, prefix: str, file: str = "data.parquet", verify: bool = True) -> pa.Table:
        """Read one Parquet file of a committed artifact, checking its sha256 against the manifest (``verify=False``
        skips the check: for trusted hot paths only)."""
        entry = self.manifest(prefix).file(file)
        key = f"{prefix.rstrip('/')}/{file}"
        if verify:
            data = self.get_bytes(key)
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.sha256:
                raise IntegrityError(f"{self.key_uri(key)}: sha256 {digest} does not match manifest {entry.sha256}")
            return pq.read_table(pa.BufferReader(data))
        return self.read_table(key)

    def read_artifact_bytes(self, prefix: str, file: str) -> bytes:
        """One file of a committed artifact, its sha256 checked against the manifest: a reader never pairs a file
        with another writer's manifest, nor reads a file the manifest does not list."""
        entry = self.manifest(prefix).file(file)
        key = f"{prefix.rstrip('/')}/{file}"
        data = self.get_bytes(key)
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise IntegrityError(f"{self.key_uri(key)}: sha256 {digest} does not match manifest {entry.sha256}")
        return data

    def verify(self, prefix: str, file: str) -> None:
        """Check one file of a committed artifact against its manifest (size, then sha256, read in chunks), once per
        version of the file in this process (a version: the manifest's sha256 and the object's size and time), so
        that a reader that then reads only some columns or row groups (the UI's pages) reads a checked file."""
        entry = self.manifest(prefix).file(file)
        key = f"{prefix.rstrip('/')}/{file}"
        info = self._info(key)
        tag = (key, entry.sha256, info.size, info.mtime_ns)
        if tag in self._verified:
            return
        if info.size != entry.bytes:
            raise IntegrityError(f"{self.key_uri(key)}: {info.size} bytes, the manifest says {entry.bytes}")
        h = hashlib.sha256()
        with self._fs.open_input_stream(self._full(key)) as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        if h.hexdigest() != entry.sha256:
            raise IntegrityError(f"{self.key_uri(key)}: sha256 {h.hexdigest()} does not match manifest {entry.sha256}")
        self._verified.add(tag)

    def read_artifact_json(self, prefix: str, file: str) -> Any:
        """:meth:`read_artifact_bytes`, parsed as JSON (a record nested past Python's recursion limit is an
        IntegrityError, not a RecursionError)."""
        try:
            return json.loads(self.read_artifact_bytes(prefix, file))
        except RecursionError:
            raise IntegrityError(f"{self.key_uri(prefix)}/{file}: JSON nested too deeply") from None

    def list_flywheels(self) -> list[str]:
        return [k.rstrip("/") for k in self.list() if k.endswith("/")]

    def list_iterations(self, flywheel: str) -> list[int]:
        found = (_ITER_RE.match(k.rstrip("/").rsplit("/", 1)[-1]) for k in self.list(flywheel))
        return sorted(int(m.group(1)) for m in found if m)

    def list_stages(self, flywheel: str, iteration: int) -> list[str]:
        keys = self.list(f"{flywheel}/iter={iteration}")
        return [k.rstrip("/").rsplit("/", 1)[-1] for k in keys if k.endswith("/")]

    def list_artifacts(self, flywheel: str, iteration: int, stage: str, committed_only: bool = True) -> list[str]:
        return self.list_artifacts_at(f"{flywheel}/iter={iteration}/{stage}", committed_only)

    def list_artifacts_at(self, prefix: str, committed_only: bool = True) -> list[str]:
        """Names of the (committed) artifacts directly under ``prefix``."""
        keys = self.list(prefix)
        prefixes = [k.rstrip("/") for k in keys if k.endswith("/")]
        return [p.rsplit("/", 1)[-1] for p in prefixes if not committed_only or self.is_committed(p)]

    # Internals -----------------------------------------------------------------------------------------------------

    def _info(self, key: str) -> pafs.FileInfo:
        try:
            return self._fs.get_file_info(self._full(key))
        except OSError as exc:
            raise self._wrap(exc, key) from exc

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[str]:
        """Yield a local temp path; publish it to ``key`` only if the block succeeds."""
        full = self._full(key)
        if self._local:
            self._inside_root(full, key)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            self._sweep_staging(os.path.dirname(full))
            # Same directory as the target: os.replace is then an atomic rename on POSIX.
            tmp = os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.tmp-{uuid.uuid4().hex}")
        else:
            tmp = os.path.join(tempfile.mkdtemp(prefix="arena-stage-"), "object")
        try:
            yield tmp
            if self._local:
                os.replace(tmp, full)
            else:
                self._upload(tmp, full, key)
        finally:
            if self._local:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            else:
                shutil.rmtree(os.path.dirname(tmp), ignore_errors=True)

    def _inside_root(self, full: str, key: str) -> None:
        """Refuse a local write whose directory resolves outside the root (a symlink planted in the tree)."""
        root = os.path.realpath(self._base)
        parent = os.path.dirname(full)
        while not os.path.exists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        real = os.path.realpath(parent)
        if os.path.islink(full) or (real != root and not real.startswith(root + os.sep)):
            raise StoreURIError(f"{self.key_uri(key)}: refusing to write outside the store root {root} (via {real})")

    @staticmethod
    def _sweep_staging(directory: str) -> None:
        """Remove staging files an interrupted write left here (older than an hour: a live writer's are not)."""
        import time

        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        cutoff = time.time() - _STALE_STAGING_S
        for entry in entries:
            if _STAGING.match(entry.name):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.remove(entry.path)

    def _upload(self, local_path: str, full: str, key: str) -> None:
        # close() is called explicitly because S3 reports a failed part or a failed completion there;
        # pyarrow.fs.copy_files leaves the close to the stream's destructor, which only logs the error (measured
        # with a server that fails UploadPart: copy_files returned and no object existed). The copy runs in a
        # worker thread because Python runs signal handlers (Airflow's SIGTERM on task kill, Ctrl-C) only in the
        # main thread: an interrupt cannot reach the stream half-written, and closing a half-written S3 stream
        # *completes* the upload with partial data (arrow has no abort: apache/arrow#40502). The main thread
        # re-raises the interrupt at once; the daemon worker then either finishes the whole object or dies with
        # the process, leaving an incomplete multipart upload, which S3 never shows.
        # The source is opened here, before the worker starts: the caller's cleanup may delete the staging file as
        # soon as an interrupt unwinds this frame, and a worker that then failed to open it would drop an empty,
        # never-written stream, which the destructor publishes as an empty object.
        failure: list[BaseException] = []
        src = open(local_path, "rb")  # noqa: SIM115 - closed by the worker

        def copy() -> None:
            try:
                with src:
                    out = self._fs.open_output_stream(full)
                    while chunk := src.read(_UPLOAD_CHUNK):
                        out.write(chunk)
                out.close()
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        worker = threading.Thread(target=copy, name=f"arena-upload-{os.path.basename(full)}", daemon=True)
        worker.start()
        worker.join()
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise self._wrap(exc, key) from exc
            raise exc

    def _wrap(self, exc: OSError, key: str) -> StoreError:
        text = str(exc)
        if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            return MissingCredentialsError(f"{self.key_uri(key)}: access denied by the S3 endpoint: {text}")
        if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
            return StoreError(f"{self.key_uri(key)}: bucket does not exist: {text}")
        return StoreError(f"{self.key_uri(key)}: {text}")


class ArtifactWriter:
    """Collects the files of one artifact; :meth:`ArtifactStore.artifact` commits it."""

    def __init__(self, store: ArtifactStore, prefix: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.prefix = prefix
        self.meta = meta
        self.token = uuid.uuid4().hex
        self._files: dict[str, FileEntry] = {}
        self.superseded: Manifest | None = None  # set when another writer committed the same content first

    def _key(self, name: str) -> str:
        parts = [p for p in name.split("/") if p]
        if name.startswith("/") or not parts or parts[0] in (MANIFEST, WRITER):
            raise StoreURIError(f"{self.prefix}: reserved, empty or absolute file name {name!r}")
        self._still_mine()
        return f"{self.prefix}/{'/'.join(parts)}"

    def _still_mine(self) -> None:
        """Two writers of one artifact must not leave a mix of both: the one that started last owns it, and the
        other stops before it writes another file or its manifest."""
        try:
            owner = self.store.get_bytes(f"{self.prefix}/{WRITER}").decode()
        except ArtifactNotFoundError:
            owner = None
        if owner != self.token:
            raise StoreConflictError(
                f"{self.uri}: another writer started on this artifact while this one was writing it; this writer's "
                "commit is abandoned (its files may be gone or overwritten): rerun it if its content is wanted"
            )

    def _record(self, name: str, entry: FileEntry) -> FileEntry:
        self._files[name] = FileEntry(name, entry.sha256, entry.bytes, entry.rows)
        return self._files[name]

    def write_table(self, name: str, table: pa.Table | pa.RecordBatchReader) -> FileEntry:
        return self._record(name, self.store.write_table(self._key(name), table))

    def write_json(self, name: str, obj: Any) -> FileEntry:
        return self._record(name, self.store.write_json(self._key(name), obj))

    def put_bytes(self, name: str, data: bytes) -> FileEntry:
        return self._record(name, self.store.put_bytes(self._key(name), data))

    def put_file(self, name: str, local_path: str | os.PathLike[str]) -> FileEntry:
        return self._record(name, self.store.put_file(self._key(name), local_path))

    def put_dir(self, local_dir: str | os.PathLike[str]) -> list[FileEntry]:
        """Every file under ``local_dir`` at the same relative path (a model checkpoint)."""
        root = Path(local_dir)
        return [self.put_file(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()]

    @property
    def uri(self) -> str:
        return self.store.key_uri(self.prefix)

    def _commit(self) -> Manifest:
        manifest = Manifest(
            files=sorted(self._files.values(), key=lambda f: f.path),
            meta=self.meta,
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            self._still_mine()
        except StoreConflictError:
            # The other writer may have committed exactly this content (two attempts of one deterministic task):
            # then there is nothing to do, and nothing was lost.
            theirs = self._committed()
            if theirs is not None and _same_files(theirs, manifest):
                log.info("%s: already committed by another writer with the same content", self.uri)
                self.superseded = theirs
                return theirs
            raise
        self.store.put_bytes(f"{self.prefix}/{MANIFEST}", manifest.to_json().encode())
        return manifest

    def _committed(self) -> Manifest | None:
        try:
            return self.store.manifest(self.prefix)
        except (ArtifactNotFoundError, NotCommittedError):
            return None


def _same_files(a: Manifest, b: Manifest) -> bool:
    return [(f.path, f.sha256) for f in a.files] == [(f.path, f.sha256) for f in b.files]


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        rule = "1–128 letters, digits, '.', '_', '-', '=' (a letter or digit first)"
        raise StoreURIError(f"bad {what} {value!r}: {rule}")


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# S3 -----------------------------------------------------------------------------------------------------------------


def s3_credentials(s3: S3Config, uri: str) -> dict[str, Any]:
    """Resolve endpoint, region and credentials: Airflow connection, then env vars, then (opt-in) default chain.

    Returns keyword arguments for :class:`pyarrow.fs.S3FileSystem`. Never logs secrets.
    """
    kwargs: dict[str, Any] = {"region": s3.region}
    endpoint = s3.endpoint_url
    if s3.anonymous:
        kwargs["anonymous"] = True
    elif s3.conn_id:
        conn = _airflow_connection(s3.conn_id, uri)
        extra = conn.extra_dejson or {}
        endpoint = extra.get("endpoint_url", endpoint)
        kwargs["region"] = extra.get("region_name", s3.region)
        if not (conn.login and conn.password):
            raise MissingCredentialsError(
                f"{uri}: Airflow connection {s3.conn_id!r} has no login (access key) and password (secret key)"
            )
        kwargs.update(access_key=conn.login, secret_key=conn.password)
        if extra.get("aws_session_token"):
            kwargs["session_token"] = extra["aws_session_token"]
    elif os.environ.get(s3.access_key_env) and os.environ.get(s3.secret_key_env):
        kwargs.update(access_key=os.environ[s3.access_key_env], secret_key=os.environ[s3.secret_key_env])
        if os.environ.get(s3.session_token_env):
            kwargs["session_token"] = os.environ[s3.session_token_env]
    elif not s3.allow_default_chain:
        raise MissingCredentialsError(
            f"{uri}: no S3 credentials: set {s3.access_key_env} and {s3.secret_key_env}, or storage.s3.conn_id "
            "(an Airflow aws connection), or storage.s3.allow_default_chain: true (instance role / IRSA)"
        )
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if not sep or scheme not in ("http", "https") or not host:
            raise StoreURIError(f"{uri}: endpoint_url {endpoint!r} must look like http(s)://host[:port]")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    return kwargs


def _s3_filesystem(s3: S3Config | None, uri: str) -> pafs.S3FileSystem:
    from arena_ops.config import S3Config

    kwargs = s3_credentials(s3 or S3Config(), uri)
    # Short timeouts and few retries: a wrong endpoint should fail in seconds, not minutes.
    return pafs.S3FileSystem(
        connect_timeout=5, request_timeout=60, retry_strategy=pafs.AwsStandardS3RetryStrategy(3), **kwargs
    )


def _airflow_connection(conn_id: str, uri: str) -> Any:
    from arena_ops.airflow.connections import get_connection

    try:
        return get_connection(conn_id)
    except ImportError as exc:  # pragma: no cover - airflow is a core dependency
        raise MissingCredentialsError(f"{uri}: storage.s3.conn_id is set but Airflow is not installed") from exc
    except Exception as exc:  # Airflow raises its own AirflowNotFoundException family
        raise MissingCredentialsError(f"{uri}: Airflow connection {conn_id!r} not found: {exc}") from exc
