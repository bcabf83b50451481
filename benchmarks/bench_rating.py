"""Bradley–Terry fit + bootstrap: aggregated counts with batched Newton (ours) vs per-battle logistic regression.

Input: synthetic battles from known strengths (default 1,000,000 battles among 20 models, 10% ties). Ours:
aggregate once, fit, then a ``--rounds`` bootstrap (multinomial redraws of the counts, all rounds fitted together).
Baseline: FastChat's ``compute_mle_elo`` formulation — scikit-learn ``LogisticRegression`` on the per-battle design
matrix (each battle twice so a tie is one win each way), and a bootstrap that resamples battles and refits. The
baseline's bootstrap is timed on ``--baseline-rounds`` rounds and scaled to ``--rounds`` (printed as such): a
1000-round per-battle bootstrap would take far too long to run in full. Both run in this one process, side by side.

``--cli`` also times ``arena elo`` as a whole process on the same battles (a Parquet file), with and without plots:
what a user waits for, imports included.

Run: ``.venv/bin/python benchmarks/bench_rating.py [--battles N] [--models M] [--rounds R] [--cli]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
from results import emit


def synthetic(n: int, m: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    elo = np.sort(rng.normal(1000, 150, m))[::-1]
    names = np.array([f"model-{k:02d}" for k in range(m)])
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p = 1 / (1 + 10 ** ((elo[b] - elo[a]) / 400))
    tie = rng.random(n) < 0.1
    win = rng.random(n) < np.clip((p - 0.05) / 0.9, 0, 1)
    winner = np.where(tie, "tie", np.where(win, "model_a", "model_b"))
    return pa.table({"model_a": names[a], "model_b": names[b], "winner": winner}), elo


def baseline_fit(x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6, max_iter=1000)
    lr.fit(x, y)
    elo = 400 * lr.coef_[0]
    return elo - elo.mean() + 1000


def baseline_design(battles: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    from arena_ops.rating import bt

    models, ia, ib, outcome = bt.encode(battles)
    n, m = len(ia), len(models)
    x = np.zeros((n, m), dtype=np.float64)
    x[np.arange(n), ia], x[np.arange(n), ib] = np.log(10), -np.log(10)
    y = np.zeros(2 * n)
    y[:n][outcome == bt.WIN_A] = 1
    y[n:][outcome != bt.WIN_B] = 1
    return np.concatenate([x, x]), y, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--battles", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--baseline-rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", action="store_true", help="Also time `arena elo` as a whole process.")
    ap.add_argument(
        "--versus",
        metavar="REV",
        help="With --cli: also time `arena elo` of git revision REV (a temporary worktree), interleaved, same file.",
    )
    args = ap.parse_args()

    from threadpoolctl import threadpool_info

    from arena_ops.rating import bt

    battles, truth = synthetic(args.battles, args.models, args.seed)
    blas = {i.get("internal_api") for i in threadpool_info()}
    print(f"{args.battles:,} battles, {args.models} models, {args.rounds} bootstrap rounds (BLAS: {blas})")

    t0 = time.perf_counter()
    pc = bt.aggregate(battles)
    t_agg = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = bt.fit_bt(pc)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = bt.bootstrap_bt(pc, rounds=args.rounds, seed=args.seed)
    t_boot = time.perf_counter() - t0
    ours_total = t_agg + t_fit + t_boot

    x, y, m = baseline_design(battles)
    t0 = time.perf_counter()
    base = baseline_fit(x, y, m)
    t_base_fit = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    n = battles.num_rows
    t0 = time.perf_counter()
    for _ in range(args.baseline_rounds):
        idx = rng.integers(0, n, n)
        baseline_fit(x[np.concatenate([idx, idx + n])], y[np.concatenate([idx, idx + n])], m)
    t_base_round = (time.perf_counter() - t0) / args.baseline_rounds
    base_total = t_base_fit + t_base_round * args.rounds

    truth_c = truth - truth.mean() + 1000
    print(
        f"max |ours - baseline| fit: {np.abs(ours - base).max():.4f} Elo; "
        f"max |ours - truth|: {np.abs(ours - truth_c).max():.1f} Elo; "
        f"median CI width: {np.median(np.percentile(samples, 97.5, 0) - np.percentile(samples, 2.5, 0)):.1f}"
    )
    print(f"{'':34}{'ours s':>10}{'baseline s':>14}{'ratio':>9}")
    print(f"{'aggregate (ours only)':34}{t_agg:>10.3f}{'':>14}{'':>9}")
    print(f"{'one fit':34}{t_fit:>10.3f}{t_base_fit:>14.2f}{t_base_fit / t_fit:>9.0f}")
    print(
        f"{'one bootstrap round':34}{t_boot / args.rounds:>10.5f}{t_base_round:>14.2f}"
        f"{t_base_round / (t_boot / args.rounds):>9.0f}"
    )
    print(
        f"{f'fit + {args.rounds} rounds (baseline scaled)':34}{ours_total:>10.3f}{base_total:>14.0f}"
        f"{base_total / ours_total:>9.0f}"
    )
    print(f"goal: fit + {args.rounds} rounds < 2 s on 2 cores -> {'met' if ours_total < 2 else 'NOT met'}")
    size = f"{args.battles:,} battles, {args.models} models, {args.rounds} rounds"
    emit(
        f"BT fit + bootstrap ({size})",
        ours_total,
        "s",
        ratio=base_total / ours_total,
        baseline=f"per-battle LogisticRegression (its bootstrap timed on {args.baseline_rounds} rounds, scaled)",
        note=f"fits agree to {np.abs(ours - base).max():.3f} Elo",
    )
    if args.cli:
        whole_process(battles, args.rounds, ours_total, size, args.versus)


def whole_process(battles: pa.Table, rounds: int, library_s: float, size: str, versus: str | None = None) -> None:
    """``arena elo`` end to end in a fresh interpreter: imports, reading the file, the fit, writing the board."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import pyarrow.parquet as pq

    arena = str(Path(sys.executable).parent / "arena")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "battles.parquet"
        pq.write_table(battles, path)
        cases = {
            "python -c 'import arena_ops.cli' (imports only)": [sys.executable, "-c", "import arena_ops.cli"],
            "arena elo --no-plots": [
                arena,
                "elo",
                str(path),
                "--out",
                f"{tmp}/a",
                f"--bootstrap={rounds}",
                "--no-plots",
            ],
            "arena elo (with plots)": [arena, "elo", str(path), "--out", f"{tmp}/b", f"--bootstrap={rounds}"],
        }
        took = {}
        for name, cmd in cases.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            took[name] = time.perf_counter() - t0
            print(f"{name:48}{took[name]:>8.2f} s")
        whole = took["arena elo --no-plots"]
        if versus:
            versus_process(path, rounds, versus, size, tmp)
        emit(
            f"`arena elo --no-plots` whole process ({size})",
            whole,
            "s",
            ratio=whole / library_s,
            better="lower",
            baseline="the library's aggregate + fit + bootstrap in the same run",
            note=f"imports alone {took[next(iter(cases))]:.2f} s",
        )


def versus_process(path: object, rounds: int, rev: str, size: str, tmp: str, repeat: int = 3) -> None:
    """`arena elo --no-plots` of this tree and of revision ``rev`` (a temporary git worktree on PYTHONPATH), run
    alternately ``repeat`` times on the same file: the before/after of a change, side by side in one run."""
    import os
    import statistics
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    old = Path(tmp) / "versus"
    subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=repo, check=True, capture_output=True)
    try:
        times: dict[str, list[float]] = {"this tree": [], rev: []}
        for _ in range(repeat):
            for name, root in (("this tree", repo), (rev, old)):
                cmd = [sys.executable, "-m", "arena_ops.cli", "elo", str(path), "--out", f"{tmp}/v",
                       f"--bootstrap={rounds}", "--no-plots"]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(root)}
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tmp)
                times[name].append(time.perf_counter() - t0)
        new, before = statistics.median(times["this tree"]), statistics.median(times[rev])
        print(f"arena elo --no-plots, median of {repeat}: this tree {new:.2f} s, {rev} {before:.2f} s")
        emit(f"`arena elo --no-plots` whole process against {rev} ({size})", new, "s", ratio=before / new,
             baseline=f"the same command at {rev}, interleaved, same run")  # fmt: skip
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=repo, capture_output=True)


if __name__ == "__main__":
    main()
