"""`make test` runs the suite in two lanes; a test file in neither would silently never run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_file_runs_in_a_lane() -> None:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    lanes = {}
    for name in ("LANE_A", "LANE_B", "RAY_JOB_TESTS"):
        m = re.search(rf"^{name} :=(.*)$", makefile, re.M)
        assert m, f"Makefile defines no {name}"
        lanes[name] = m.group(1).split()
    lane_a = [t for p in lanes["LANE_A"] for t in (lanes["RAY_JOB_TESTS"] if p == "$(RAY_JOB_TESTS)" else [p])]
    paths = lane_a + lanes["LANE_B"]
    files = [p for p in paths if "::" not in p]
    for test_file in sorted(REPO.glob("tests/**/test_*.py")):
        rel = test_file.relative_to(REPO).as_posix()
        covering = [p for p in files if rel == p or rel.startswith(p.rstrip("/") + "/")]
        assert len(covering) == 1, f"{rel} is in {len(covering)} lanes of `make test` (must be exactly one)"
