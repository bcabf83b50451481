"""The flywheel folder ($ARENA_FLYWHEELS): one flywheel per config, broken ones reported by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_ops.errors import ConfigError
from arena_ops.flywheels import config_path, discover, flywheels

REPO = Path(__file__).resolve().parents[2]


def test_unset_missing_or_empty_folders_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARENA_FLYWHEELS", raising=False)
    assert discover()[0] == [] and "ARENA_FLYWHEELS is not set" in discover()[1]
    assert "no such directory" in discover(tmp_path / "nowhere")[1]
    assert "no *.yaml config" in discover(tmp_path)[1]


def test_one_flywheel_per_config_and_broken_ones_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.yaml").symlink_to(REPO / "configs" / "tiny.yaml")  # relative paths resolve at the target
    text = (REPO / "configs" / "tiny.yaml").read_text()
    (tmp_path / "typo.yaml").write_text(text.replace("flywheel: tiny", "flywheel: typo").replace("num_shards", "nm"))
    (tmp_path / "twin.yml").write_text(text.replace("flywheel: tiny", "flywheel: tiny_b"))
    (tmp_path / "twin2.yaml").write_text(text.replace("flywheel: tiny", "flywheel: tiny-b"))  # same DAG ids
    (tmp_path / "notes.txt").write_text("not a config")
    monkeypatch.setenv("ARENA_FLYWHEELS", str(tmp_path))
    found, why = discover()
    assert why is None
    by_file = {f.path.name: f for f in found}
    assert sorted(by_file) == ["tiny.yaml", "twin.yml", "twin2.yaml", "typo.yaml"]
    assert by_file["tiny.yaml"].cfg is not None and by_file["tiny.yaml"].cfg.data.sources[0].startswith(str(REPO))
    assert "typo.yaml" in by_file["typo.yaml"].error and "nm" in by_file["typo.yaml"].error
    assert "same DAG ids as 'tiny_b'" in by_file["twin2.yaml"].error
    assert [f.name for f in flywheels()] == ["tiny", "tiny_b"] and by_file["twin.yml"].id_suffix == "tiny_b"
    assert config_path("tiny") == tmp_path / "tiny.yaml"
    with pytest.raises(ConfigError, match="no flywheel 'x'"):
        config_path("x")
