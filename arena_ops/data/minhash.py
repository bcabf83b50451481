"""Near-duplicate detection with MinHash-LSH: datasketch, and a vectorised numpy engine (the default).

Why our own engine next to datasketch: datasketch hashes and queries one document at a time from Python; the
numpy engine hashes every shingle of a chunk of documents in one array operation and finds LSH band collisions by
sorting, which `benchmarks/bench_dedup.py` measures side by side (see README for the figures). Both use the same
shingles, the same banding parameters (datasketch's optimiser) and the same rule: a document is a near-duplicate
when its MinHash Jaccard estimate against an earlier *kept* document reaches the threshold; the first of a group is
kept.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word ``ngram``-shingles of the case-folded text (the whole text when it is shorter than one shingle)."""
    words = _WORD.findall(text.casefold())
    if len(words) <= ngram:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)}


def near_duplicates(
    texts: list[str], threshold: float, num_perm: int = 128, ngram: int = 3, engine: str = "numpy"
) -> dict[int, int]:
    """``{i: j}`` for every text ``i`` that is a near-duplicate of an earlier kept text ``j``."""
    if engine == "datasketch":
        return _datasketch(texts, threshold, num_perm, ngram)
    sigs = signatures(texts, num_perm, ngram)
    return dedup_signatures(sigs, threshold)


# numpy engine ------------------------------------------------------------------------------------------------------


def _shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """All shingle hashes (uint64 < 2^32) concatenated, and each document's offset into them (len(texts) + 1).

    A document shorter than one shingle gets a single hash of all its words.
    """
    vocab: dict[str, int] = {}
    ids_per_doc = [[vocab.setdefault(w, len(vocab)) for w in _WORD.findall(t.casefold())] for t in texts]
    lengths = np.fromiter((len(x) for x in ids_per_doc), dtype=np.int64, count=len(texts))
    flat = np.fromiter((i for x in ids_per_doc for i in x), dtype=np.int64, count=int(lengths.sum()))
    # Stable word hashes (crc32), so a signature does not depend on the order in which words were first seen.
    word_hash = np.fromiter((zlib.crc32(w.encode()) for w in vocab), dtype=np.uint64, count=len(vocab))
    h = word_hash[flat]
    starts = np.cumsum(lengths) - lengths
    full = lengths >= ngram
    n_sh = np.where(full, lengths - ngram + 1, 1)
    offsets = np.concatenate([[0], np.cumsum(n_sh)])
    out = np.zeros(int(offsets[-1]), dtype=np.uint64)
    if len(h) >= ngram:
        mix = np.zeros(len(h) - ngram + 1, dtype=np.uint64)
        for k in range(ngram):  # polynomial combination of n consecutive word hashes (wrapping uint64)
            mix = mix * np.uint64(1_000_003) + h[k : len(h) - ngram + 1 + k]
        cnt = np.where(full, n_sh, 0)
        doc_of = np.repeat(np.arange(len(texts)), cnt)
        within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        out[offsets[doc_of] + within] = mix[starts[doc_of] + within]
    for d in np.flatnonzero(~full):  # rare: fewer words than one shingle
        acc = np.uint64(0)
        for v in h[starts[d] : starts[d] + lengths[d]]:
            acc = acc * np.uint64(1_000_003) + v
        out[offsets[d]] = acc
    return out & np.uint64(0xFFFFFFFF), offsets


def signatures(
    texts: list[str], num_perm: int = 128, ngram: int = 3, seed: int = 1, chunk: int = 1 << 18
) -> np.ndarray:
    """``(len(texts), num_perm)`` uint32 MinHash signatures: ``min over shingles of (a·x + b) >> 32``.

    Multiply-add-shift hashing (Dietzfelbinger): random odd 64-bit ``a``, random ``b``, arithmetic mod 2^64, keep
    the high 32 bits — a 2-universal family without a division (a prime modulus was 8× slower here). The low 32
    bits would not do: unrelated texts then agreed on 80% of their minima.
    """
    hashes, offsets = _shingle_hashes(texts, ngram)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    sig = np.empty((len(texts), num_perm), dtype=np.uint32)
    d0 = 0
    while d0 < len(texts):  # whole documents, about `chunk` shingles at a time
        d1 = max(int(np.searchsorted(offsets, offsets[d0] + chunk, side="right")) - 1, d0 + 1)
        lo, hi = offsets[d0], offsets[d1]
        vals = hashes[lo:hi, None] * a[None, :]  # in place from here: one temporary per chunk
        vals += b[None, :]
        vals >>= np.uint64(32)
        sig[d0:d1] = np.minimum.reduceat(vals, offsets[d0:d1] - lo, axis=0)
        d0 = d1
    return sig


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives at ``threshold`` (datasketch's optimiser)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def dedup_signatures(sig: np.ndarray, threshold: float, max_per_bucket: int = 16) -> dict[int, int]:
    """Greedy in document order over LSH candidates confirmed by the signature agreement."""
    n, num_perm = sig.shape
    bands, rows = lsh_params(threshold, num_perm)
    pairs = []
    for band in range(bands):
        block = np.ascontiguousarray(sig[:, band * rows : (band + 1) * rows])
        key = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = sorted_key[1:] != sorted_key[:-1]
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        rank = np.arange(n) - group_start
        # Each member pairs with the first few (earliest) members of its bucket.
        for k in range(1, max_per_bucket + 1):
            has = rank >= k
            pairs.append(np.stack([order[group_start[has] + k - 1], order[has]], axis=1))
    if not pairs:
        return {}
    cand = np.concatenate(pairs)
    cand = np.sort(cand, axis=1)  # (earlier, later)
    cand = np.unique(cand[cand[:, 0] != cand[:, 1]], axis=0)
    sim = (sig[cand[:, 0]] == sig[cand[:, 1]]).mean(axis=1)
    cand, sim = cand[sim >= threshold], sim[sim >= threshold]
    # Greedy: walk later documents in order; a document is removed if a confirmed earlier partner was kept.
    order = np.lexsort((-sim, cand[:, 1]))
    dup_of: dict[int, int] = {}
    for (j, i), _ in zip(cand[order], sim[order], strict=True):
        i, j = int(i), int(j)
        if i not in dup_of and j not in dup_of:
            dup_of[i] = j
    return dup_of


# datasketch engine -------------------------------------------------------------------------------------------------


def _datasketch(texts: list[str], threshold: float, num_perm: int, ngram: int) -> dict[int, int]:
    from datasketch import MinHash, MinHashLSH

    hashes = MinHash.bulk([shingles(t, ngram) for t in texts], num_perm=num_perm, seed=1)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dup_of: dict[int, int] = {}
    for i, mh in enumerate(hashes):
        best = None
        for j in lsh.query(mh):
            sim = hashes[j].jaccard(mh)
            if sim >= threshold and (best is None or sim > best[1]):
                best = (j, sim)
        if best is not None:
            dup_of[i] = best[0]
        else:
            lsh.insert(i, mh)
    return dup_of
