"""MinHash-LSH near-duplicate removal on synthetic instructions with planted near-duplicates.

Reports time, recall of the planted pairs (those whose true shingle Jaccard reaches the threshold), and false
removals, for the numpy engine and datasketch side by side on the same data in one run.

    python benchmarks/bench_dedup.py --rows 1000000               # both engines on 1M rows
    python benchmarks/bench_dedup.py --rows 1000000 --datasketch-rows 200000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from arena_ops.data.minhash import near_duplicates, shingles


def synthetic(rows: int, dup_fraction: float, seed: int) -> tuple[list[str], dict[int, int]]:
    """Zipf-distributed pseudo-words, 12–40 words per instruction; planted copies edit one word at the end."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(30_000)])
    n_base = int(rows * (1 - dup_fraction))
    lengths = rng.integers(12, 41, size=n_base)
    words = rng.zipf(1.3, size=int(lengths.sum())) % len(vocab)
    texts, pos = [], 0
    for n in lengths:
        texts.append("Please " + " ".join(vocab[words[pos : pos + n]]))
        pos += n
    planted: dict[int, int] = {}
    sources = rng.integers(0, n_base, size=rows - n_base)
    for src in sources:
        edit = rng.integers(3)
        base = texts[src].split()
        if edit == 0:
            base.append(vocab[rng.integers(len(vocab))])
        elif edit == 1:
            base[-1] = vocab[rng.integers(len(vocab))]
        else:
            base.insert(len(base) - 1, vocab[rng.integers(len(vocab))])
        planted[len(texts)] = int(src)
        texts.append(" ".join(base))
    order = rng.permutation(len(texts))  # planted copies land anywhere, before or after their source
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    shuffled = [texts[i] for i in order]
    return shuffled, {int(inverse[c]): int(inverse[s]) for c, s in planted.items()}


def jaccard(a: str, b: str, ngram: int) -> float:
    sa, sb = shingles(a, ngram), shingles(b, ngram)
    return len(sa & sb) / len(sa | sb)


def measure(engine: str, texts: list[str], planted: dict[int, int], threshold: float, ngram: int) -> dict:
    t0 = time.perf_counter()
    dup_of = near_duplicates(texts, threshold=threshold, num_perm=128, ngram=ngram, engine=engine)
    seconds = time.perf_counter() - t0
    # A planted pair counts as found when either member is removed (which one survives depends on order).
    qualifying = [(c, s) for c, s in planted.items() if jaccard(texts[c], texts[s], ngram) >= threshold]
    found = sum(1 for c, s in qualifying if c in dup_of or s in dup_of)
    in_planted = {c for c in planted} | {s for s in planted.values()}
    false_removals = sum(
        1 for i, j in dup_of.items() if i not in in_planted and jaccard(texts[i], texts[j], ngram) < threshold - 0.1
    )
    return {
        "engine": engine,
        "rows": len(texts),
        "seconds": seconds,
        "removed": len(dup_of),
        "recall": found / max(len(qualifying), 1),
        "qualifying_pairs": len(qualifying),
        "false_removals": false_removals,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--datasketch-rows", type=int, default=None, help="Rows for datasketch (default: --rows).")
    ap.add_argument("--dup-fraction", type=float, default=0.05)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    texts, planted = synthetic(args.rows, args.dup_fraction, args.seed)
    print(
        f"generated {len(texts):,} instructions ({len(planted):,} planted near-duplicates) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    results = [measure("numpy", texts, planted, args.threshold, args.ngram)]
    n_ds = args.datasketch_rows or args.rows
    if n_ds != args.rows:
        texts, planted = synthetic(n_ds, args.dup_fraction, args.seed)
        results.append(measure("numpy", texts, planted, args.threshold, args.ngram))
    results.append(measure("datasketch", texts, planted, args.threshold, args.ngram))
    print(f"{'engine':<11} {'rows':>10} {'seconds':>9} {'removed':>9} {'recall':>7} {'false rm':>9}")
    for r in results:
        print(
            f"{r['engine']:<11} {r['rows']:>10,} {r['seconds']:>9.1f} {r['removed']:>9,} {r['recall']:>7.3f} "
            f"{r['false_removals']:>9,}"
        )
    same = [r for r in results if r["rows"] == results[-1]["rows"]]
    print(f"speed-up numpy vs datasketch at {same[-1]['rows']:,} rows: {same[-1]['seconds'] / same[0]['seconds']:.1f}x")
    from results import emit

    emit(
        f"MinHash-LSH near-duplicate removal, {same[0]['rows']:,} instructions (numpy)",
        same[0]["seconds"],
        "s",
        ratio=same[-1]["seconds"] / same[0]["seconds"],
        baseline="datasketch on the same rows, shingles and banding",
        note=f"recall {same[0]['recall']:.3f} vs {same[-1]['recall']:.3f}, {same[0]['false_removals']} false removals",
    )


if __name__ == "__main__":
    main()
