"""`make bench`: run every benchmark the README quotes, record the figures, compare them with the last recorded results.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...] [--quick] [--against FILE] [--readme]

Each benchmark runs as its own process (a bounded size and a timeout each; the whole set takes about 25 minutes on
2 cores) and reports its figures through ``benchmarks/results.py``. The results go to
``benchmarks/results/<machine>-<date>.json`` (``--out`` to choose); then each figure's *ratio* — ours against its
baseline measured side by side in the same run — is compared with the newest recorded results of this kind of machine
(``--against`` to choose; absolute times are reported, never compared). A ratio worse than the recorded one by more
than the tolerance (25%) is a regression: the command prints both values and exits 1 (2 when a benchmark failed).
``--readme`` regenerates the README's benchmark table from this run's file (commit both).

``--quick`` runs each benchmark at a small size (a smoke test; its figures are named by their sizes, so they are
never compared with full-size ones).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

from results import (
    RESULTS,
    TOLERANCE,
    Figure,
    collect,
    compare,
    machine,
    read,
    readme_with_table,
    recorded,
    write,
)

REPO = Path(__file__).resolve().parents[1]
GEMMA = REPO / ".arena" / "models" / "gemma-3-270m"  # `make demo` puts it there

#: name → (arguments at full size, at --quick size, timeout in seconds). Sizes are what a 2-core machine does in
#: minutes; the README's figures come from these.
BENCHES: dict[str, tuple[list[str], list[str], int]] = {
    "rating": (
        [
            "bench_rating.py",
            "--battles",
            "1000000",
            "--rounds",
            "1000",
            "--baseline-rounds",
            "1",
            "--cli",
            "--versus",
            "1f203e1",
        ],  # fmt: skip  # the commit issue 33 measured arena elo's 3.87 s at
        ["bench_rating.py", "--battles", "20000", "--rounds", "50", "--baseline-rounds", "1"],
        900,
    ),
    "store": (
        ["bench_store.py", "--rows", "200000", "--repeat", "3"],
        ["bench_store.py", "--rows", "20000", "--repeat", "2"],
        600,
    ),
    "ui": (
        ["bench_ui.py", "--battles", "300000", "--repeat", "3"],
        ["bench_ui.py", "--battles", "20000", "--repeat", "2"],
        900,
    ),
    "dedup": (
        ["bench_dedup.py", "--rows", "100000"],
        ["bench_dedup.py", "--rows", "5000"],
        900,
    ),
    "bench": (
        ["bench_bench.py", "--prompts", "150"],
        ["bench_bench.py", "--prompts", "20"],
        900,
    ),
    "serving-startup": (
        ["bench_serving.py", "startup", "--config", "configs/tiny.yaml", "--swaps", "2"],
        ["bench_serving.py", "startup", "--config", "configs/tiny.yaml", "--swaps", "1"],
        1200,
    ),
    "serving-battles": (
        ["bench_serving.py", "battles", "--config", "configs/tiny.yaml", "--prompts", "32", "--down"],
        ["bench_serving.py", "battles", "--config", "configs/tiny.yaml", "--prompts", "8", "--down"],
        1200,
    ),
    "serving-throughput": (
        ["bench_serving.py", "throughput", "--model", str(GEMMA), "--rounds", "2"],
        ["bench_serving.py", "throughput", "--model", str(GEMMA), "--rounds", "1", "--prompts", "16"],
        1500,
    ),
}


def run(name: str, quick: bool) -> tuple[list[Figure], str | None]:
    full, small, timeout = BENCHES[name]
    args = small if quick else full
    if name == "serving-throughput" and not GEMMA.exists():
        return [], f"skipped: no {GEMMA.relative_to(REPO)} (run `make demo` first)"
    cmd = [sys.executable, str(REPO / "benchmarks" / args[0]), *args[1:]]
    shown = " ".join([".venv/bin/python", f"benchmarks/{args[0]}", *args[1:]])
    print(f"== {name}: {shown}", flush=True)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"failed: over its {timeout} s timeout"
    print(res.stdout[-3000:], end="", flush=True)
    if res.returncode != 0:
        return [], f"failed (exit {res.returncode}): {res.stderr[-2000:]}"
    figures = collect(res.stdout, f"benchmarks/{args[0]}", shown)
    print(f"   {len(figures)} figure(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    return figures, None if figures else "failed: it reported no figure"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(BENCHES), help="Only this benchmark (repeatable).")
    ap.add_argument("--quick", action="store_true", help="Small sizes: a smoke test, not the README's figures.")
    ap.add_argument("--out", type=Path, help="Results file (default benchmarks/results/<machine>-<date>.json).")
    ap.add_argument("--against", type=Path, help="Recorded results to compare with (default: the newest of them).")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="Relative change of a ratio allowed.")
    ap.add_argument("--readme", action="store_true", help="Regenerate the README's benchmark table from this run.")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    kind = machine()
    date = dt.date.today().isoformat()
    out = args.out or RESULTS / f"{kind}{'-quick' if args.quick else ''}-{date}.json"
    against = args.against or recorded(RESULTS, kind, exclude=out)
    figures: list[Figure] = []
    problems: dict[str, str] = {}
    for name in args.only or list(BENCHES):
        got, problem = run(name, args.quick)
        figures += got
        if problem:
            problems[name] = problem
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    meta = {
        "machine": kind,
        "date": date,
        "commit": commit.stdout.strip() or "unknown",
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - started, 1),
        "problems": problems,
        "file": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
    }
    write(figures, out, meta)
    print(f"\nresults: {out} ({len(figures)} figures, {meta['wall_s']:.0f} s)")
    for name, problem in problems.items():
        print(f"  {name}: {problem}")
    regressions: list[str] = []
    if against is not None and against.exists():
        _, old = read(against)
        regressions = compare(figures, old, args.tolerance)
        print(f"compared with {against}: {len(regressions)} regression(s)")
        for r in regressions:
            print(f"  REGRESSION {r}")
    else:
        print("no recorded results to compare with")
    if args.readme:
        readme = REPO / "README.md"
        readme.write_text(readme_with_table(readme.read_text(), meta, figures))
        print("README benchmark table regenerated")
    failed = [n for n, p in problems.items() if p.startswith("failed")]
    return 1 if regressions else 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
