"""The training stages, in one place: name → dataset builder, trainer, base-model rule, config section.

Adding a stage means one entry here and one trainer function in :mod:`arena_ops.training.stages`. Everything else —
the round's plan, the DAG's tasks, the CLI, the data report — reads this table.

Base-model rule (the same for every stage): a stage starts from the round's *current policy* — the newest policy a
stage before it in this round produced — or, when none did yet, the round's start model. Under the paper schedule
that is exactly the model that battled in the stage's step (SFT-Ik battles slice 2 and DPO-Ik trains from it).
The reward model starts from the same weights, as a classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from arena_ops.config import ArenaConfig, StageHyperparams
from arena_ops.errors import TrainingError

from .data import BattleContext, build_pairs, build_rl, build_sft


@dataclass(frozen=True)
class StageSpec:
    name: str
    policy: bool  # produces a policy that is served, battles and is evaluated (the reward model does not)
    build: Callable[[BattleContext, ArenaConfig], pa.Table]  # training rows from one step's battles
    trainer: str  # "module:function" that builds the TRL trainer inside the training job
    needs: tuple[str, ...] = ()  # stages of the same round whose models the job also needs

    def hyperparams(self, cfg: ArenaConfig) -> StageHyperparams:
        return getattr(cfg.training, self.name)


def k_sft(cfg: ArenaConfig, iteration: int) -> float:
    """The paper's SFT margin: K = 3 in the first iteration, 1 later."""
    return cfg.training.k_sft_first if iteration == 0 else cfg.training.k_sft


def _not_from_battles(ctx: BattleContext, cfg: ArenaConfig) -> pa.Table:
    raise TrainingError("init is trained on a sample of data.init_sources (`arena train init`), not on battles")


STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec(  # the start model before iteration 0: arena_ops.training.init
            "init",
            policy=True,
            build=_not_from_battles,
            trainer="arena_ops.training.stages:sft_trainer",
        ),
        StageSpec(
            "sft",
            policy=True,
            build=lambda ctx, cfg: build_sft(ctx, cfg.models.target.name, k_sft(cfg, ctx.iteration)),
            trainer="arena_ops.training.stages:sft_trainer",
        ),
        StageSpec(
            "dpo",
            policy=True,
            build=lambda ctx, cfg: build_pairs(ctx, cfg.training.k_dpo, one_per_prompt=True),
            trainer="arena_ops.training.stages:dpo_trainer",
        ),
        StageSpec(
            "rm",
            policy=False,
            build=lambda ctx, cfg: build_pairs(ctx, cfg.training.k_dpo, one_per_prompt=False),
            trainer="arena_ops.training.stages:rm_trainer",
        ),
        StageSpec(
            "rl",
            policy=True,
            build=lambda ctx, cfg: build_rl(ctx),
            trainer="arena_ops.training.stages:rl_trainer",
            needs=("rm",),
        ),
    )
}
ORDER = tuple(STAGES)


def stage(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise TrainingError(f"unknown training stage {name!r}; expected one of {list(STAGES)}") from None


def with_needs(policies: list[str]) -> list[str]:
    """The stages to train for these policy stages, in order: ``rl`` brings its reward model ``rm``."""
    wanted = {n for p in policies for n in (p, *stage(p).needs)}
    return [n for n in ORDER if n in wanted]
