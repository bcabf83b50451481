"""Config loading: the shipped examples validate; bad configs fail with file, key path, line and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_ops.config import (
    ArenaConfig,
    ExternalSource,
    RecordedSource,
    ServedSource,
    load_config,
    parse_override,
)
from arena_ops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """\
flywheel: fw
models:
  target: {name: t, source: {kind: served, path: ./models/t}}
  competitors:
    - {name: c, source: {kind: external, base_url: "https://api.example/v1", model: gpt-4o, api_key_env: KEY}}
  judge: {name: j, source: {kind: recorded, path: answers/j.jsonl}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "arena.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["tiny", "demo", "cluster"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(cfg, ArenaConfig)
    assert cfg.models.competitors


def test_cluster_config_is_a_gpu_s3_setup() -> None:
    cfg = load_config(REPO / "configs" / "cluster.yaml")
    assert cfg.storage.root.startswith("s3://") and cfg.storage.s3.conn_id == "arena_s3"
    assert cfg.models.judge.source.engine.device == "gpu"  # type: ignore[union-attr]
    assert any(isinstance(c.source, ExternalSource) for c in cfg.models.competitors)


def test_defaults_follow_the_paper(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    t = cfg.training
    assert (t.k_sft_first, t.k_sft, t.k_dpo) == (3.0, 1.0, 2.0)
    assert (t.sft.learning_rate, t.sft.epochs) == (5e-6, 3)
    assert (t.dpo.learning_rate, t.dpo.epochs, t.dpo.beta) == (5e-7, 2, 0.3)
    assert (t.rm.learning_rate, t.rl.learning_rate, t.rl.beta) == (1e-6, 1e-7, 0.4)
    assert (cfg.rating.bootstrap_rounds, cfg.rating.ci_level) == (100, 0.95)
    assert cfg.data.min_instruction_chars == 10 and cfg.data.num_shards == 9


def test_sources_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert isinstance(cfg.models.target.source, ServedSource)
    assert cfg.models.target.source.path == str(tmp_path / "models" / "t")
    assert isinstance(cfg.models.judge.source, RecordedSource)
    assert cfg.models.judge.source.path == str(tmp_path / "answers" / "j.jsonl")
    assert cfg.storage.root == f"file://{(tmp_path.parent / '.arena' / 'artifacts').resolve()}"


def test_hf_ids_and_s3_paths_are_kept(tmp_path: Path) -> None:
    text = MINIMAL.replace("path: ./models/t", "path: Qwen/Qwen2.5-7B-Instruct")
    assert load_config(_write(tmp_path, text)).models.target.source.path == "Qwen/Qwen2.5-7B-Instruct"  # type: ignore[union-attr]


def test_unknown_key_named_with_path_and_line(tmp_path: Path) -> None:
    text = MINIMAL + "battle:\n  concurency: 4\n"
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    msg = str(exc.value)
    assert str(tmp_path / "arena.yaml") in msg
    assert "battle.concurency (line 8): unknown key" in msg


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    text = MINIMAL + "rating:\n  bootstrap_rounds: many\n"
    with pytest.raises(
        ConfigError, match=r"rating\.bootstrap_rounds \(line 8\): Input should be a valid integer.*got 'many'"
    ):
        load_config(_write(tmp_path, text))


def test_nested_union_error_path_skips_the_tag(tmp_path: Path) -> None:
    text = MINIMAL.replace("model: gpt-4o, ", "")
    with pytest.raises(ConfigError, match=r"models\.competitors\.0\.source\.model \(line 5\): Field required"):
        load_config(_write(tmp_path, text))


def test_unknown_source_kind(tmp_path: Path) -> None:
    text = MINIMAL.replace("kind: recorded", "kind: telepathy")
    with pytest.raises(ConfigError, match=r"models\.judge\.source.*'served', 'external', 'recorded'"):
        load_config(_write(tmp_path, text))


def test_duplicate_model_names(tmp_path: Path) -> None:
    text = MINIMAL.replace("{name: c,", "{name: t,")
    with pytest.raises(ConfigError, match=r"repeated: \['t'\]"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("rating:\n  anchor: llama\n", "MODEL=VALUE"),
        ("training:\n  deepspeed: {zero_stage: 2, offload_params: true}\n", "requires zero_stage 3"),
        ("flywheel: Bad Name\n", "flywheel"),
        ("judge:\n  combine: average\n", r"judge\.combine"),
    ],
)
def test_semantic_validation(tmp_path: Path, snippet: str, message: str) -> None:
    text = MINIMAL.replace("flywheel: fw\n", "") if snippet.startswith("flywheel") else MINIMAL
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text + snippet))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "flywheel: [\n"))
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_overrides(tmp_path: Path) -> None:
    overrides = dict(
        map(parse_override, ["battle.sample_limit=8", "rating.anchor=c=1100", "models.judge.sampling.seed=3"])
    )
    cfg = load_config(_write(tmp_path, MINIMAL), overrides)
    assert cfg.battle.sample_limit == 8 and cfg.rating.anchor == "c=1100" and cfg.models.judge.sampling.seed == 3
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("battle.sample_limit")
    with pytest.raises(ConfigError, match="battle.sample_limit"):
        load_config(_write(tmp_path, MINIMAL), {"battle.sample_limit": "lots"})


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    again = tmp_path / "resolved.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(again) == cfg


# Hostile configs: bombs, secrets, variables, dates, crons, strict types ----------------------------------------------

SECRET = "sk-live-0123456789abcdef"


def test_a_yaml_bomb_is_refused_quickly_without_echo(tmp_path: Path) -> None:
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 10)]
    path = _write(tmp_path, "\n".join(lines) + "\n" + MINIMAL + "battle:\n  sample_limit: *a9\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="expands to more than") as info:
        load_config(path)
    assert time.monotonic() - start < 5 and len(str(info.value)) < 500  # was > 150 s and 3.1 GB


def test_huge_values_are_not_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + f"battle: {{sample_limit: '{'9' * 50_000}x'}}\n")
    with pytest.raises(ConfigError, match="battle.sample_limit") as info:
        load_config(path)
    assert len(str(info.value)) < 600


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="a config file is at most"):
        load_config(path)


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        (f"storage: {{s3: {{secret_key_env: {SECRET}}}}}", "storage.s3.secret_key_env"),
        (f"storage: {{s3: {{access_key_env: 'AKIA {SECRET}'}}}}", "storage.s3.access_key_env"),
        (f"storage: {{s3: {{endpoint_url: 'http://admin:{SECRET}@minio:9000'}}}}", "storage.s3.endpoint_url"),
        (f"training: {{launcher: {{ray_address: 'http://u:{SECRET}@head:8265'}}}}", "training.launcher.ray_address"),
    ],
)
def test_secrets_where_names_belong_are_refused_and_never_echoed(tmp_path: Path, snippet: str, key: str) -> None:
    path = _write(tmp_path, MINIMAL + snippet + "\n")
    with pytest.raises(ConfigError, match=key) as info:
        load_config(path)
    assert SECRET not in str(info.value)


def test_a_pasted_api_key_and_url_credentials_of_a_model_are_refused(tmp_path: Path) -> None:
    for source in (
        f'{{kind: external, base_url: "https://api.example/v1", model: m, api_key_env: "{SECRET}"}}',
        f'{{kind: external, base_url: "https://me:{SECRET}@api.example/v1", model: m}}',
    ):
        text = MINIMAL.replace("{kind: recorded, path: answers/j.jsonl}", source)
        with pytest.raises(ConfigError, match="models.judge.source") as info:
            load_config(_write(tmp_path, text))
        assert SECRET not in str(info.value)


def test_variables_are_expanded_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARENA_TEST_BUCKET", "team-bucket")
    monkeypatch.delenv("ARENA_TEST_UNSET", raising=False)
    cfg = load_config(_write(tmp_path, MINIMAL + "storage: {root: 's3://${ARENA_TEST_BUCKET}/arena'}\n"))
    assert cfg.storage.root == "s3://team-bucket/arena"
    cfg = load_config(_write(tmp_path, MINIMAL + "storage: {root: 's3://${ARENA_TEST_UNSET:-fallback}/x'}\n"))
    assert cfg.storage.root == "s3://fallback/x"
    with pytest.raises(ConfigError, match=r"storage.root: environment variable ARENA_TEST_UNSET is not set"):
        load_config(_write(tmp_path, MINIMAL + "storage: {root: 'file://${ARENA_TEST_UNSET}/x'}\n"))
    assert not list(tmp_path.glob("*${*"))  # no directory named after the literal text


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("airflow: {start_date: '2026-13-45'}", "airflow.start_date.*a date YYYY-MM-DD that exists"),
        ("airflow: {start_date: not-a-date}", "airflow.start_date.*a date YYYY-MM-DD"),
        ("airflow: {schedule: '61 * * * *'}", "airflow.schedule.*not a cron expression"),
        ("airflow: {schedule: 'nightly'}", "airflow.schedule.*not a cron expression"),
        ("rating: {bootstrap_rounds: true}", "rating.*bootstrap_rounds: expected a number, got true"),
        ("battle: {concurrency: false}", "battle.*concurrency: expected a number, got false"),
    ],
)
def test_dates_crons_and_strict_numbers(tmp_path: Path, snippet: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, MINIMAL + snippet + "\n"))


def test_valid_dates_and_schedules_pass(tmp_path: Path) -> None:
    for snippet in (
        "airflow: {start_date: 2026-02-28, schedule: '@daily'}",
        "airflow: {schedule: null}",
        "airflow: {schedule: '*/15 2-4 * * 1-5'}",
    ):
        load_config(_write(tmp_path, MINIMAL + snippet + "\n"))


def test_the_c_loader_is_used_when_available() -> None:
    import yaml

    from arena_ops import config

    assert config._LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_config_check_shows_variables_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARENA_TEST_BUCKET", "bucket-secret-name")
    cfg = load_config(_write(tmp_path, MINIMAL + "storage: {root: 's3://${ARENA_TEST_BUCKET}/arena'}\n"))
    assert cfg.storage.root == "s3://bucket-secret-name/arena"
    shown = cfg.to_yaml()
    assert "s3://${ARENA_TEST_BUCKET}/arena" in shown and "bucket-secret-name" not in shown
