"""What a training stage publishes: a tied output head is stored once (the trainer under DeepSpeed wrote it twice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from arena_ops.training.stages import drop_tied_copies


def _tiny(tied: bool) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config).eval()


def _save_with_both_copies(model: LlamaForCausalLM, out: Path) -> None:
    """What Trainer.save_model wrote under DeepSpeed: every parameter, the tied head included, in one file."""
    model.save_pretrained(out)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("tied", [True, False])
def test_a_tied_head_is_stored_once_and_the_model_loads_the_same(tmp_path: Path, tied: bool) -> None:
    torch.manual_seed(0)
    model = _tiny(tied)
    _save_with_both_copies(model, tmp_path)
    assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
    saved = drop_tied_copies(str(tmp_path))
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    if tied:
        assert saved >= 512 * 32 * 4 and "lm_head.weight" not in keys
    else:
        assert saved == 0 and "lm_head.weight" in keys  # an untied head is a parameter of its own
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[1, 5, 9, 200]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_a_head_that_differs_from_the_embedding_is_kept(tmp_path: Path) -> None:
    _save_with_both_copies(_tiny(tied=True), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    save_file(state, str(tmp_path / "model.safetensors"))
    assert drop_tied_copies(str(tmp_path)) == 0
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
