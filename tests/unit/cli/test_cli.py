"""The `arena` entry point, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ARENA = [str(Path(sys.executable).parent / "arena")]


def _run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ARENA, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_config_check_prints_resolved_config() -> None:
    res = _run("config", "check", "configs/tiny.yaml")
    assert res.returncode == 0, res.stderr
    resolved = yaml.safe_load(res.stdout)
    assert resolved["flywheel"] == "tiny"
    assert resolved["storage"]["root"] == f"file://{REPO / '.arena' / 'artifacts'}"
    assert resolved["rating"]["ci_level"] == 0.95  # defaults are filled in
    assert "is a valid config" in res.stderr


def test_config_check_from_any_directory_and_env(tmp_path: Path) -> None:
    res = _run("config", "check", cwd=tmp_path, env={"ARENA_CONFIG": str(REPO / "configs" / "tiny.yaml")})
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(res.stdout)["storage"]["root"] == f"file://{REPO / '.arena' / 'artifacts'}"


def test_broken_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("sample_limit: 8", "sample_limt: 8"))
    res = _run("config", "check", str(bad))
    assert res.returncode == 2
    assert f"{bad}: invalid config" in res.stderr
    assert "battle.sample_limt" in res.stderr and "unknown key" in res.stderr
    assert "Traceback" not in res.stderr


def test_set_override_is_validated() -> None:
    res = _run("--set", "battle.sample_limit=0", "config", "check", "configs/tiny.yaml")
    assert res.returncode == 2 and "battle.sample_limit" in res.stderr and "greater than or equal to 1" in res.stderr


def test_every_subcommand_has_help() -> None:
    for args in [
        [],
        ["config"],
        ["config", "check"],
        ["config", "reference"],
        ["store", "ls"],
        ["models"],
        ["models", "build-tiny"],
        ["data", "prepare"],
        ["data", "ingest"],
        ["battle", "run"],
        ["battle", "judge"],
        ["round"],
        ["round", "run"],
        ["round", "show"],
        ["data", "make-tasks"],
    ]:
        res = _run(*args, "--help")
        assert res.returncode == 0 and "Usage:" in res.stdout, (args, res.stderr)


def test_store_ls_lists_committed_and_uncommitted(tmp_path: Path) -> None:
    import pyarrow as pa

    from arena_ops.store import ArtifactStore

    cfg = tmp_path / "c.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("file://../.arena/artifacts", "file://store"))
    store = ArtifactStore.from_uri(f"file://{tmp_path / 'store'}")
    with store.artifact("tiny", 1, "battles", "judged") as w:
        w.write_table("data.parquet", pa.table({"x": [1, 2, 3]}))
    store.put_bytes("tiny/iter=1/generate/responses/data.parquet", b"partial")
    res = _run("--config", str(cfg), "store", "ls")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any("battles" in ln and "judged" in ln and " 3 " in ln for ln in lines), res.stdout
    assert any("responses" in ln and "no" in ln for ln in lines), res.stdout


def test_data_prepare_builds_shards_and_reports_counts(tmp_path: Path) -> None:
    store = f"file://{tmp_path}/store"
    res = _run("--config", "configs/tiny.yaml", "--set", f"storage.root={store}", "data", "ingest")
    assert res.returncode == 0, res.stderr
    assert "quarantined" in res.stdout and "255" in res.stdout
    res = _run("--config", "configs/tiny.yaml", "--set", f"storage.root={store}", "data", "prepare")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"tiny/data/shard-{k:03d}" for k in range(9)]
    res = _run("--config", "configs/tiny.yaml", "--set", f"storage.root={store}", "battle", "run", "--shard", "17")
    assert res.returncode == 2 and "shard 17 out of range" in res.stderr


def test_a_config_on_the_command_line_beats_arena_config_in_the_environment(tmp_path: Path) -> None:
    """`arena stack env` exports ARENA_CONFIG; a --config given on the command line (global or the command's own)
    must still win over it, and the variable is the default only when neither is given."""
    other = tmp_path / "other.yaml"
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["flywheel"] = "other-flywheel"
    raw["storage"] = {"root": f"file://{tmp_path}/store"}
    raw["data"]["sources"] = [str((REPO / "configs" / s).resolve()) for s in raw["data"]["sources"]]
    other.write_text(yaml.safe_dump(raw))
    env = {"ARENA_CONFIG": str(REPO / "configs" / "tiny.yaml")}
    for args in (("--config", str(other), "store", "ls"), ("store", "ls", "--config", str(other))):
        res = _run(*args, env=env)
        assert "other-flywheel" in res.stdout + res.stderr and res.returncode == 0, (args, res.stderr[-2000:])
    res = _run("config", "check", env=env)
    assert "'tiny'" in res.stderr, res.stderr[-2000:]
