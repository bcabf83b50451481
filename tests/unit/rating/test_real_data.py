"""The rating engine on real third-party judgments in ../shared/validation (skipped where ../shared is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from arena_ops.rating import (
    Board,
    bt,
    compute_leaderboard,
    consistency_report,
    describe_preferences,
    read_battles,
)
from arena_ops.rating.consistency import read_board, separability


@pytest.fixture(scope="module")
def validation(shared_dir: Path) -> Path:
    return shared_dir / "validation"


def _sklearn_style_fit(battles) -> np.ndarray:
    """FastChat's compute_mle_elo (per-battle logistic regression, penalty=None), as an independent reference."""
    from sklearn.linear_model import LogisticRegression

    models, ia, ib, outcome = bt.encode(battles)
    n, m = len(ia), len(models)
    x = np.zeros((n, m))
    x[np.arange(n), ia], x[np.arange(n), ib] = np.log(10), -np.log(10)
    y = np.zeros(2 * n)
    y[:n][outcome == bt.WIN_A] = 1  # a tie is one win for each side across the two copies
    y[n:][outcome != bt.WIN_B] = 1
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000)
    lr.fit(np.concatenate([x, x]), y)
    elo = 400 * lr.coef_[0]
    return elo - elo.mean() + 1000


@pytest.mark.parametrize("name", ["vicuna80_human_votes.csv", "vicuna80_gpt4_judge.csv"])
def test_bt_on_vicuna80_matches_fastchat_formulation(validation: Path, name: str) -> None:
    data = read_battles([validation / "battles" / name])
    assert data.quarantine.num_rows == 0
    ours = bt.fit_bt(bt.aggregate(data.table), prior_games=0)  # maximum likelihood, as FastChat's
    assert np.abs(ours - _sklearn_style_fit(data.table)).max() < 0.01


def _straightforward_mle(battles) -> np.ndarray:
    """Bradley–Terry by direct maximisation of the per-battle log-likelihood (a tie is half a win each), scipy's
    BFGS from zero: the textbook estimator, sharing no code with ours; centred at 1000 like FastChat's board."""
    from scipy.optimize import minimize

    models, ia, ib, outcome = bt.encode(battles)
    s_a = np.where(outcome == bt.WIN_A, 1.0, np.where(outcome == bt.WIN_B, 0.0, 0.5))
    alpha = np.log(10) / 400

    def nll(r: np.ndarray) -> tuple[float, np.ndarray]:
        x = alpha * (r[ia] - r[ib])
        p = 1 / (1 + np.exp(-x))
        loss = -np.sum(s_a * np.log(p) + (1 - s_a) * np.log1p(-p))
        g = np.zeros_like(r)
        np.add.at(g, ia, -alpha * (s_a - p))
        np.add.at(g, ib, alpha * (s_a - p))
        return loss, g

    fit = minimize(nll, np.zeros(len(models)), jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 10_000})
    return fit.x - fit.x.mean() + 1000


@pytest.mark.parametrize("name", ["vicuna80_human_votes.csv", "vicuna80_gpt4_judge.csv"])
def test_exact_mode_board_reproduces_fastchat_compute_bt(validation: Path, name: str, tmp_path: Path) -> None:
    """``prior_games=0`` (config ``rating.prior_games``, CLI ``--prior-games 0``): the board's point ratings are plain
    maximum likelihood, FastChat's ``compute_mle_elo``, to well under 0.05 Elo; the default prior is not."""
    data = read_battles([validation / "battles" / name])
    reference = _straightforward_mle(data.table)
    exact = compute_leaderboard(data.table, rounds=20, seed=0, prior_games=0)
    assert exact.params["prior_games"] == 0
    assert np.abs(exact.mle - reference).max() < 0.05
    default = compute_leaderboard(data.table, rounds=20, seed=0)
    assert np.abs(default.mle - reference).max() > 0.05  # so the check above can tell the two modes apart
    from tests.unit.rating.test_bad_input import _arena

    res = _arena("elo", str(validation / "battles" / name), "--prior-games", "0", "--out", str(tmp_path), "--no-plots")
    assert res.returncode == 0, res.stderr
    rows = {r["model"]: r["mle"] for r in json.loads((tmp_path / "leaderboard.json").read_text())}
    assert max(abs(rows[m] - reference[k]) for k, m in enumerate(exact.models)) < 0.05


def test_vicuna80_human_board_shape(validation: Path) -> None:
    data = read_battles([validation / "battles" / "vicuna80_human_votes.csv"])
    lb = compute_leaderboard(data.table, rounds=100, seed=0)
    top = [r["model"] for r in lb.records()][:2]
    assert set(top) == {"gpt4", "claude"}  # the two strongest systems in the human votes
    assert sum(r["battles"] for r in lb.records()) == 2 * data.table.num_rows


def test_human_and_gpt4_judge_boards_agree(validation: Path) -> None:
    boards = []
    for name in ("vicuna80_human_votes.csv", "vicuna80_gpt4_judge.csv"):
        lb = compute_leaderboard(read_battles([validation / "battles" / name]).table, rounds=100, seed=0)
        boards.append(Board(lb.models, lb.rating, lb.ci_low, lb.ci_high))
    report = consistency_report(boards[1], boards[0])
    assert report["models"] == 8 and report["spearman"] > 0.7


def test_alpaca_eval_win_rates_equal_the_published_leaderboard(validation: Path) -> None:
    d = validation / "alpaca_eval"
    ann = pacsv.read_csv(d / "annotations_weighted_alpaca_eval_gpt4_turbo.csv")
    board = {r[""]: r for r in pacsv.read_csv(d / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv").to_pylist()}
    checked = 0
    for model in sorted(set(ann["model"].to_pylist()) & set(board)):
        prefs = ann.filter(pc.equal(ann["model"], model))["preference"].to_numpy(zero_copy_only=False)
        ours, published = describe_preferences(prefs), board[model]
        for key in ("win_rate", "standard_error", "discrete_win_rate"):
            assert ours[key] == pytest.approx(published[key], abs=1e-6), (model, key)
        for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
            assert ours[key] == published[key], (model, key)
        checked += 1
    assert checked >= 50


# Arena-Hard-Auto's consistency notebook: its inputs, and the numbers printed in its outputs ------------------------

NOTEBOOK = {  # benchmark file, name map (arena name → benchmark name, or benchmark → arena), printed numbers
    "arena_hard": (
        "bootstrap_stats_arena_hard.jsonl",
        "arena_to_arena_hard.json",
        dict(
            spearman=0.932330827067669,
            agreement_with_ci=0.903954802259887,
            strict_agreement=0.9157894736842105,
            separability=0.8421,
            brier=0.07047865504650436,
            log_loss=0.3950460397256576,
        ),
    ),
    "mt_bench": (
        "bootstrap_stats_mt_bench.jsonl",
        "arena_to_mt_bench.json",
        dict(
            spearman=0.8932330827067668,
            agreement_with_ci=0.6949152542372882,
            strict_agreement=0.868421052631579,
            separability=0.3632,
            brier=0.10082905842501223,
            log_loss=0.3310536497002041,
        ),
    ),
    "alpaca_lc": (
        "bootstrap_stats_alpaca_LC.jsonl",
        "alpaca_to_arena.json",
        dict(
            spearman=0.8781954887218045,
            agreement_with_ci=0.8728813559322034,
            strict_agreement=0.8526315789473684,
            separability=0.8789,
            brier=0.13472585300420672,
            log_loss=1.9652927160512885,
        ),
    ),
    "alpaca": (
        "bootstrap_stats_alpaca.jsonl",
        "alpaca_to_arena.json",
        dict(
            spearman=0.7578947368421052,
            agreement_with_ci=0.7909604519774012,
            strict_agreement=0.8105263157894737,
            separability=0.7105,
            brier=0.16421065021224288,
            log_loss=1.8408659325008474,
        ),
    ),
    "20k_votes": (
        "bootstrap_stats_20k_votes_elo.jsonl",
        None,
        dict(spearman=0.9819548872180449, agreement_with_ci=0.8983050847457628, strict_agreement=0.9578947368421052),
    ),
}


def _arena_reference(d: Path) -> Board:
    keep = set(json.loads((d / "arena_to_arena_hard.json").read_text()))  # the notebook's 20 shared models
    rows = [r for r in pacsv.read_csv(d / "leaderboard_table_df.csv").to_pylist() if r["model"] in keep]
    return Board(
        [r["model"] for r in rows], *(np.array([r[c] for r in rows]) for c in ("rating", "rating_q025", "rating_q975"))
    )


def _benchmark_board(d: Path, file: str, mapping: str | None) -> Board:
    rename = None
    if mapping:
        raw = json.loads((d / mapping).read_text())
        # alpaca_to_arena maps benchmark → arena; the others map arena → benchmark (lower-cased names).
        rename = raw if mapping.startswith("alpaca") else {v: k for k, v in raw.items()}
    rows = [json.loads(line) for line in (d / file).read_text().splitlines()]
    if rename and not mapping.startswith("alpaca"):
        for r in rows:
            r["model"] = r["model"].lower()
    tmp = [r for r in rows if rename is None or r["model"] in rename]
    return Board.from_samples(
        [rename[r["model"]] if rename else r["model"] for r in tmp],
        *(np.array([r[c] for r in tmp]) for c in ("score", "lower", "upper")),
        [np.asarray(r["results"], dtype=float) for r in tmp],
    )


@pytest.mark.parametrize("benchmark", sorted(NOTEBOOK))
def test_consistency_metrics_reproduce_the_notebook(validation: Path, benchmark: str) -> None:
    d = validation / "consistency"
    file, mapping, printed = NOTEBOOK[benchmark]
    report = consistency_report(_benchmark_board(d, file, mapping), _arena_reference(d))
    assert report["models"] == 20
    for key, value in printed.items():
        tol = 5e-5 if key == "separability" else 1e-9  # the notebook prints separability rounded to 0.01%
        assert report[key] == pytest.approx(value, abs=tol), key
    assert report["average_consistency"] == pytest.approx(
        (report["spearman"] + report["agreement_with_ci"] + report["separability"]) / 3
    )
    # The paper's scale (+1 agree, 0 not separated, −1 disagree) is 2a − 1 of the notebook's printed a.
    assert report["agreement_with_ci_paper"] == pytest.approx(2 * printed["agreement_with_ci"] - 1, abs=1e-9)
    assert report["average_consistency_paper"] == pytest.approx(
        (report["spearman"] + report["agreement_with_ci_paper"] + report["separability"]) / 3
    )


def test_separability_of_whole_boards(validation: Path) -> None:
    d = validation / "consistency"
    arena_hard = read_board(str(d / "bootstrap_stats_arena_hard.jsonl"))
    assert len(arena_hard.models) == 28
    assert separability(arena_hard) == pytest.approx(1 - 76 / 378)  # "Overlap Pair #: 76, Total model Pair #: 378"
    assert separability(_arena_reference(d)) == pytest.approx(1 - 16 / 190)
