"""Where instruction files are read from: local paths, ``file://`` and ``s3://`` URIs, globs on each.

Everything goes through :mod:`pyarrow.fs`, the file-system layer the artifact store uses: an ``s3://`` source is
read with the flywheel's S3 settings and credentials (``storage.s3``: endpoint, Airflow connection or environment),
so a data set in the cluster's bucket is read where it lies. Globs (``*``, ``?``, ``[…]`` within one path part,
``**`` across parts) are matched against one listing of the pattern's fixed prefix — one LIST call on S3, not one
per directory.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import pyarrow.fs as pafs

from arena_ops.errors import DataError

if TYPE_CHECKING:
    from arena_ops.config import StorageConfig


@dataclass(frozen=True)
class SourceFile:
    """One file a source names: ``uri`` as a user would write it, ``path`` on ``fs``."""

    uri: str
    fs: pafs.FileSystem
    path: str
    size: int
    mtime_ns: int | None

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.name)[1].lower()

    def open(self) -> BinaryIO:
        """A buffered binary stream of the file (closed by the caller)."""
        return io.BufferedReader(self.fs.open_input_stream(self.path), buffer_size=1 << 20)  # type: ignore[arg-type]


def filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str, str]:
    """``(fs, path on fs, prefix that turns a path back into a URI)`` for a source."""
    if uri.startswith("s3://"):
        from arena_ops.store import _s3_filesystem

        return _s3_filesystem(storage.s3 if storage else None, uri), uri[len("s3://") :], "s3://"
    if uri.startswith("file://"):
        return pafs.LocalFileSystem(), uri[len("file://") :], "file://"
    if "://" in uri:
        raise DataError(f"data source {uri!r}: unsupported scheme; expected a local path, file:// or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)), ""


def expand(patterns: list[str], storage: StorageConfig | None = None, what: str = "data.sources") -> list[SourceFile]:
    """Every file the patterns name, each pattern's matches sorted; a pattern that matches nothing is an error."""
    files: list[SourceFile] = []
    for pattern in patterns:
        found = matches(pattern, storage)
        if not found:
            kind = "the glob matches no files" if glob.has_magic(pattern) else "no such file"
            raise DataError(f"data source {pattern!r} ({what}): {kind}")
        files.extend(found)
    if not files:
        raise DataError(f"no data sources given (config key {what})")
    return files


def matches(pattern: str, storage: StorageConfig | None = None) -> list[SourceFile]:
    """The files ``pattern`` names (possibly none), sorted by path."""
    fs, path, prefix = filesystem(pattern, storage)
    try:
        if not glob.has_magic(path):
            info = fs.get_file_info(path)
            return [_file(fs, info, prefix)] if info.type == pafs.FileType.File else []
        parts = path.split("/")
        fixed = next(i for i, p in enumerate(parts) if glob.has_magic(p))
        base = "/".join(parts[:fixed]) or "/"
        recursive = "**" in parts or fixed < len(parts) - 1
        listing = fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
    except OSError as exc:
        raise DataError(f"data source {pattern!r}: cannot list it: {exc}") from exc
    found = [_file(fs, i, prefix) for i in listing if i.type == pafs.FileType.File and _match(i.path, parts)]
    return sorted(found, key=lambda f: f.path)


def _match(path: str, parts: list[str]) -> bool:
    """Path-part-wise glob match; ``**`` matches any number of parts (hidden files are never matched)."""
    names = path.split("/")
    if any(n.startswith(".") for n in names[len(names) - 1 :]):
        return False

    def walk(i: int, j: int) -> bool:
        if i == len(parts):
            return j == len(names)
        if parts[i] == "**":
            return any(walk(i + 1, k) for k in range(j, len(names) + 1))
        return j < len(names) and fnmatch.fnmatchcase(names[j], parts[i]) and walk(i + 1, j + 1)

    return walk(0, 0)


def _file(fs: pafs.FileSystem, info: pafs.FileInfo, prefix: str) -> SourceFile:
    return SourceFile(uri=prefix + info.path, fs=fs, path=info.path, size=info.size or 0, mtime_ns=info.mtime_ns)
