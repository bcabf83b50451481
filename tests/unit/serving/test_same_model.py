"""Which new weights an engine loads in place (vLLM's reload_weights, seconds) and which need a new engine (~45 s for
Gemma 3 270M on 2 cores): a fine-tuned checkpoint of the served model is the same model, whatever its trainer wrote
about how it was saved."""

from __future__ import annotations

import json
from pathlib import Path

from arena_ops.serving.engine import same_model


def checkpoint(d: Path, config: dict, tokenizer_config: dict, template: str = "{{ messages }}") -> str:
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (d / "chat_template.jinja").write_text(template)
    (d / "tokenizer.json").write_text('{"model": "bpe"}')
    return str(d)


BASE = {"architectures": ["Gemma3ForCausalLM"], "hidden_size": 640, "dtype": "bfloat16", "use_cache": True}
TOK = {"eos_token": "<eos>", "local_files_only": True, "is_local": True}


def test_a_trainers_checkpoint_is_the_same_model(tmp_path: Path) -> None:
    old = checkpoint(tmp_path / "base", BASE, TOK)
    # What TRL + transformers saved after SFT (measured): float32, use_cache off, the tokenizer's load flags.
    trained = checkpoint(
        tmp_path / "sft",
        {**BASE, "dtype": "float32", "use_cache": False, "transformers_version": "5.19.0"},
        {**TOK, "local_files_only": False},
    )
    assert same_model(old, trained)


def test_another_architecture_tokenizer_or_template_is_not(tmp_path: Path) -> None:
    old = checkpoint(tmp_path / "base", BASE, TOK)
    assert not same_model(old, checkpoint(tmp_path / "wider", {**BASE, "hidden_size": 1024}, TOK))
    assert not same_model(old, checkpoint(tmp_path / "eos", BASE, {**TOK, "eos_token": "<end_of_turn>"}))
    assert not same_model(old, checkpoint(tmp_path / "chat", BASE, TOK, template="{{ other }}"))
    assert not same_model(None, old)
