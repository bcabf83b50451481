"""Ratings from battles: Bradley–Terry Elo with bootstrap CIs, win rates, consistency between leaderboards.

Depends on numpy, scipy and pyarrow only (matplotlib, lazily, for PNG plots).
"""

from __future__ import annotations

from arena_ops.rating.battles import BATTLE_SCHEMA, BattleFormatError, Battles, read_battles, validate_battles
from arena_ops.rating.bt import aggregate, bootstrap_bt, fit_bt, online_elo, parse_anchor
from arena_ops.rating.consistency import Board, consistency_report, read_board
from arena_ops.rating.leaderboard import Leaderboard, compute_leaderboard, leaderboard_files
from arena_ops.rating.winrate import describe_preferences, win_rates_vs_reference

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
