"""PNG plots of a leaderboard (matplotlib, headless Agg backend; imported only when plots are asked for)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from arena_ops.rating.leaderboard import Leaderboard


def _figure(width: float, height: float):  # -> (Figure, Axes)
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def elo_ci_png(lb: Leaderboard) -> bytes:
    """Elo (bootstrap median) per model with CI whiskers, best first."""
    order = lb.order()
    names = [lb.models[k] for k in order]
    fig, ax = _figure(max(4.0, 0.55 * len(names) + 1.5), 4.0)
    x = np.arange(len(names))
    err = np.vstack([lb.rating[order] - lb.ci_low[order], lb.ci_high[order] - lb.rating[order]])
    ax.errorbar(x, lb.rating[order], yerr=err, fmt="o", capsize=4, color="#1f5f99")
    level = lb.params.get("ci_level", 0.95)
    ax.set_title(f"Bradley–Terry Elo with {level:.0%} bootstrap CI ({lb.params.get('bootstrap_rounds')} rounds)")
    ax.set_ylabel("Elo")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def win_rate_heatmap_png(lb: Leaderboard) -> bytes:
    """Empirical win rate of the row model against the column model (blank where they never met)."""
    order = lb.order()
    names = [lb.models[k] for k in order]
    matrix = lb.win_rate[np.ix_(order, order)]
    size = max(4.0, 0.6 * len(names) + 2.0)
    fig, ax = _figure(size, size * 0.85)
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu", vmin=0, vmax=1)
    if len(names) <= 20:
        for (r, c), v in np.ndenumerate(matrix):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("model B")
    ax.set_ylabel("model A")
    ax.set_title("Win rate of A against B (ties count half)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)
