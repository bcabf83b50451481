"""Which models battle on which prompt."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import numpy as np

from arena_ops.errors import ConfigError


def pairs_for(
    method: str,
    target: str,
    battlers: Sequence[str],
    prompt_id: str,
    pairs_per_prompt: int = 2,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """``(model_a, model_b)`` pairs for one prompt.

    - ``target_vs_competitors`` (training rounds): the target against every other battler;
    - ``all_pairs`` (evaluation: every model against every other, the paper's "2k × 31 battles");
    - ``sampled``: ``pairs_per_prompt`` distinct random pairs, seeded by ``seed`` and the prompt id, so a prompt gets
      the same pairs whatever shard or order it comes in.
    """
    if len(set(battlers)) != len(battlers):
        raise ConfigError(f"battlers repeat a name: {list(battlers)}")
    if method == "target_vs_competitors":
        if target not in battlers:
            raise ConfigError(f"target {target!r} is not among the battlers {list(battlers)}")
        return [(target, m) for m in battlers if m != target]
    every = list(itertools.combinations(battlers, 2))
    if method == "all_pairs":
        return every
    if method == "sampled":
        digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        picks = rng.choice(len(every), size=min(pairs_per_prompt, len(every)), replace=False)
        return [every[i] for i in sorted(picks)]
    raise ConfigError(f"battle.pairing: unknown method {method!r}")
