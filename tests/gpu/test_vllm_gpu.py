"""GPU checks (skipped with a reason where CUDA is absent): the tiny model on vLLM's CUDA engine."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.integration]


def test_tiny_model_generates_on_cuda(tiny_model_dir: Path) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(tiny_model_dir), dtype="bfloat16", max_model_len=512, gpu_memory_utilization=0.2)
    try:
        outs = llm.chat([[{"role": "user", "content": "hi"}]] * 8, SamplingParams(max_tokens=8, temperature=0.0))
        assert all(1 <= len(o.outputs[0].token_ids) <= 8 for o in outs)
    finally:
        del llm
