"""Ratings from battles: Bradley–Terry Elo with bootstrap CIs, win rates, consistency between leaderboards.

Depends on numpy, scipy and pyarrow only (matplotlib, lazily, for PNG plots). The names below are imported on
first use (PEP 562): ``arena elo`` needs no scipy.stats, whose import alone took ~2.6 s cold on the 2-core machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BATTLE_SCHEMA": "battles",
    "BattleFormatError": "battles",
    "Battles": "battles",
    "read_battles": "battles",
    "validate_battles": "battles",
    "aggregate": "bt",
    "bootstrap_bt": "bt",
    "fit_bt": "bt",
    "online_elo": "bt",
    "parse_anchor": "bt",
    "Board": "consistency",
    "consistency_report": "consistency",
    "read_board": "consistency",
    "Leaderboard": "leaderboard",
    "compute_leaderboard": "leaderboard",
    "leaderboard_files": "leaderboard",
    "describe_preferences": "winrate",
    "win_rates_vs_reference": "winrate",
}
__all__ = [
    "BATTLE_SCHEMA",
    "BattleFormatError",
    "Battles",
    "Board",
    "Leaderboard",
    "aggregate",
    "bootstrap_bt",
    "compute_leaderboard",
    "consistency_report",
    "describe_preferences",
    "fit_bt",
    "leaderboard_files",
    "online_elo",
    "parse_anchor",
    "read_battles",
    "read_board",
    "validate_battles",
    "win_rates_vs_reference",
]

if TYPE_CHECKING:
    from arena_ops.rating.battles import BATTLE_SCHEMA, BattleFormatError, Battles, read_battles, validate_battles
    from arena_ops.rating.bt import aggregate, bootstrap_bt, fit_bt, online_elo, parse_anchor
    from arena_ops.rating.consistency import Board, consistency_report, read_board
    from arena_ops.rating.leaderboard import Leaderboard, compute_leaderboard, leaderboard_files
    from arena_ops.rating.winrate import describe_preferences, win_rates_vs_reference


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
