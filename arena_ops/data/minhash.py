"""Near-duplicate detection with MinHash-LSH (datasketch)."""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word ``ngram``-shingles of the case-folded text (the whole text when it is shorter than one shingle)."""
    words = _WORD.findall(text.casefold())
    if len(words) <= ngram:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)}


def near_duplicates(texts: list[str], threshold: float, num_perm: int = 128, ngram: int = 3) -> dict[int, int]:
    """``{i: j}`` for every text ``i`` that is a near-duplicate of an earlier kept text ``j``.

    Candidates come from LSH banding tuned for ``threshold``; each is confirmed by the MinHash Jaccard estimate, so
    the banding's false positives are not removed. Order matters: the first of a group is kept.
    """
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
