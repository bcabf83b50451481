"""The flywheel folder: one deployment, many flywheels.

``$ARENA_FLYWHEELS`` names a directory of flywheel configs (``*.yaml`` / ``*.yml``, one flywheel each, named by its
``flywheel:`` key). The DAG files generate one set of DAGs per config found there (Airflow's dynamic DAG generation
from files), and the Arena view lists every flywheel of the folder. There is no fallback config: without a folder,
nothing is generated, and the reason is logged.

A config that does not load is reported as a :class:`Flywheel` with an ``error`` (naming the file and the key), so the
DAG files can show it in the UI while the other flywheels' DAGs still load.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from arena_ops.config import ArenaConfig, load_config
from arena_ops.errors import ConfigError

ENV = "ARENA_FLYWHEELS"
SUFFIXES = (".yaml", ".yml")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flywheel:
    """One config file of the folder: its flywheel (``cfg``), or why it cannot run (``error``)."""

    path: Path
    cfg: ArenaConfig | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.flywheel if self.cfg is not None else self.path.stem

    @property
    def id_suffix(self) -> str:
        """The flywheel in a DAG id: ``arena_elo__<flywheel>``, ``-`` mapped to ``_`` (other characters too, for a
        broken config named by its file)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)


def folder(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The flywheel folder: ``path``, else ``$ARENA_FLYWHEELS``; None when neither is set."""
    value = os.fspath(path) if path is not None else os.environ.get(ENV, "")
    return Path(value) if value.strip() else None


def discover(path: str | os.PathLike[str] | None = None) -> tuple[list[Flywheel], str | None]:
    """Every config of the folder, sorted by file name, and — when there is none — why (for the log)."""
    where = folder(path)
    if where is None:
        return [], f"${ENV} is not set: no flywheel DAGs (set it to a folder of flywheel configs)"
    if not where.is_dir():
        return [], f"${ENV}={where}: no such directory: no flywheel DAGs"
    files = sorted(p for p in where.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("."))
    if not files:
        return [], f"${ENV}={where}: no *.yaml config in it: no flywheel DAGs"
    out: list[Flywheel] = []
    seen: dict[str, Flywheel] = {}  # DAG-id suffix → the config that has it
    for p in files:
        try:
            fw = Flywheel(p, load_config(p))
        except ConfigError as exc:
            out.append(Flywheel(p, error=str(exc)))
            continue
        first = seen.setdefault(fw.id_suffix, fw)
        if first is not fw:
            out.append(
                Flywheel(
                    p,
                    error=f"{p}: flywheel: {fw.name!r} gives the same DAG ids as {first.name!r} of {first.path.name} "
                    "(each flywheel needs a name of its own; '-' and '_' count as one)",
                )
            )
            continue
        out.append(fw)
    return out, None


def flywheels(path: str | os.PathLike[str] | None = None) -> list[Flywheel]:
    """The folder's configs that load (broken ones are logged, naming the file and key)."""
    found, why = discover(path)
    if why:
        log.warning("%s", why)
    for f in found:
        if f.error:
            log.error("flywheel config %s does not load: %s", f.path, f.error)
    return [f for f in found if f.cfg is not None]


def config_path(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """The config file of flywheel ``name`` in the folder."""
    for f in flywheels(path):
        if f.name == name:
            return f.path
    raise ConfigError(f"no flywheel {name!r} in the flywheel folder {folder(path)} (${ENV})")
