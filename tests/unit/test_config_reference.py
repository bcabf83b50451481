"""The README's config reference is generated from the pydantic models and must match them."""

from __future__ import annotations

from pathlib import Path

from arena_ops.config_reference import BEGIN, END, config_reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_is_current() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the generated config reference markers"
    embedded = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert embedded == config_reference_markdown().strip(), (
        "README config reference is stale: run `arena config reference` and paste it between the markers"
    )


def test_reference_covers_every_section_and_variant() -> None:
    ref = config_reference_markdown()
    for key in [
        "`storage.s3.endpoint_url`",
        "`models.competitors[].sampling.temperature`",
        "`models.target.source(served).engine.kv_cache_gib`",
        "`models.judge.source(external).api_key_env`",
        "`training.dpo.beta`",
        "`rating.anchor`",
        "`serving.deploy_timeout_s`",
        "`data.num_shards`",
    ]:
        assert key in ref, key
    assert "| `flywheel` | str | **required** |" in ref
