"""Build a tiny random chat model locally (no downloads): for tests, CI and the plumbing of the demo.

The model is random, so its text is gibberish, but it is a real Llama/Qwen2 checkpoint with a real BPE
tokenizer and a ChatML chat template: vLLM serves it, TRL trains it, DeepSpeed shards it, structured output
and logprobs work on it. Sizes respect vLLM's CPU attention backend, which refuses head_dim < 32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "<pad>", "<|im_start|>", "<|im_end|>"]

# Training text for the tokenizer: enough variety to learn a 512-token BPE vocabulary.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea, the wind and the moon.",
    "Explain how a binary search works and give its time complexity.",
    "What is 17 plus 25? The answer is 42.",
    "Assistant A gives a helpful, relevant, accurate and detailed answer; assistant B does not.",
    'Rate each response from 1 to 10. Output JSON: {"score_a": 7, "score_b": 3, "explanation": "..."}',
    "def add(a, b):\n    return a + b\n",
    "Summarise the following paragraph in one sentence, keeping the key facts and numbers.",
    "user assistant system: You are a helpful assistant. Please answer the question.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 [[A]] [[B]] [[C]] yes no true false null",
]


def build_tiny_chat_model(
    out_dir: str | Path,
    arch: Literal["llama", "qwen2"] = "llama",
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_layers: int = 2,
    head_dim: int = 32,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a random ``arch`` model with a trained BPE tokenizer and chat template to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    heads = hidden_size // head_dim
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    if arch == "llama":
        from transformers import LlamaConfig

        config = LlamaConfig(head_dim=head_dim, **common)
    elif arch == "qwen2":
        from transformers import Qwen2Config

        config = Qwen2Config(**common)
    else:
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _template_texts() -> list[str]:
    """The judge and difficulty prompts: with them in the corpus the tiny tokenizer packs judge prompts several
    times tighter, so they fit the tiny models' 2048-token context."""
    root = Path(__file__).parent
    return [p.read_text() for p in sorted([*root.glob("battle/templates/*.yaml"), *root.glob("data/templates/*.yaml")])]


def _train_tokenizer(vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4 + _template_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
