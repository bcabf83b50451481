"""Second hostile pass, config: every number has a range (no inf, nan or absurd sizes), anchors are checked when the
config is (finite, bounded, naming a model that will be rated), an impossible unquoted date names its key and line,
and credentials in storage.root or a base_url's query string are refused without being echoed."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from arena_ops import config as C
from arena_ops.config import load_config
from arena_ops.errors import ConfigError
from tests.unit.test_config import MINIMAL, SECRET, _write


def numeric_fields() -> list[tuple[type[BaseModel], str]]:
    out, seen = [], set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, f in model.model_fields.items():
            args = typing.get_args(f.annotation) or (f.annotation,)
            for t in (*args, *(x for a in args for x in typing.get_args(a))):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)
            if any(a in (int, float) for a in args):
                out.append((model, name))

    walk(C.ArenaConfig)
    return out


def instances() -> dict[type, BaseModel]:
    """One valid instance of every config section, from the shipped configs (and a section's defaults)."""
    found: dict[type, BaseModel] = {}

    def walk(obj: object) -> None:
        if isinstance(obj, BaseModel):
            found.setdefault(type(obj), obj)
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                walk(x)
        elif isinstance(obj, dict):
            for x in obj.values():
                walk(x)

    repo = Path(__file__).resolve().parents[3] / "configs"
    for name in ("tiny", "demo", "cluster", "nightly"):
        walk(load_config(repo / f"{name}.yaml"))
    walk(C.ModelPrice())
    walk(C.TinyModelConfig(arch="llama"))
    walk(C.BenchmarkConfig(name="b", models=["a", "b"], testset="mix"))
    walk(C.RayServiceRef(name="svc"))
    return found


INSTANCES = instances()


@pytest.mark.parametrize(("model", "name"), numeric_fields(), ids=lambda x: getattr(x, "__name__", x))
def test_every_number_has_a_range(model: type[BaseModel], name: str) -> None:
    from pydantic import ValidationError

    base = INSTANCES[model].model_dump()
    model.model_validate(base)  # valid as it stands: what fails below is the number
    ann = model.model_fields[name].annotation
    is_int = int in (typing.get_args(ann) or (ann,)) and float not in (typing.get_args(ann) or (ann,))
    absurd = (10**12, -(10**12)) if is_int else (float("inf"), float("nan"), 1e12, -1e12)
    for value in absurd:
        with pytest.raises(ValidationError):
            model.model_validate({**base, name: value})


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("rating: {anchor: b=nan}", "rating.anchor.*finite number"),
        ("rating: {anchor: b=1e400}", "rating.anchor.*finite number"),
        ("rating: {anchor: b=1e308}", "rating.anchor.*finite number within"),
        ("rating: {anchor: t@someday=1100}", "rating.anchor 't@someday' is not a model that will be rated"),
        ("judge: {tie_margin: 18}", "judge.tie_margin"),
        ("battle: {request_timeout_s: .inf}", "battle.request_timeout_s"),
        ("battle: {max_retries: 1000000000}", "battle.max_retries"),
        ("training: {sft: {learning_rate: 5}}", "training.sft.learning_rate"),
        ("airflow: {start_date: 2026-02-30}", r"airflow.start_date \(line \d+\) '2026-02-30': day is out of range"),
    ],
)
def test_absurd_settings_fail_at_config_check(tmp_path: Path, snippet: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, MINIMAL + snippet + "\n"))


def test_a_real_target_version_is_a_valid_anchor(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL + "rating: {anchor: t@i2-sft=1100}\n"))
    assert cfg.rating.anchor == "t@i2-sft=1100"


@pytest.mark.parametrize(
    "snippet",
    [
        f"storage: {{root: 's3://AKIA:{SECRET}@bucket/x'}}",
        f"storage: {{root: 's3://bucket/x?token={SECRET}'}}",
    ],
)
def test_credentials_in_the_storage_root_are_refused_unechoed(tmp_path: Path, snippet: str) -> None:
    with pytest.raises(ConfigError, match="storage.root") as info:
        load_config(_write(tmp_path, MINIMAL + snippet + "\n"))
    assert SECRET not in str(info.value)


def test_an_api_key_in_a_base_url_query_is_refused_unechoed(tmp_path: Path) -> None:
    source = f'{{kind: external, base_url: "https://api.example/v1?api_key={SECRET}", model: m}}'
    text = MINIMAL.replace("{kind: recorded, path: answers/j.jsonl}", source)
    with pytest.raises(ConfigError, match="models.judge.source") as info:
        load_config(_write(tmp_path, text))
    assert SECRET not in str(info.value)
