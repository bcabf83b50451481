"""The Arena FastAPI app: every route refuses anonymous requests with Airflow's own auth dependency; JSON shapes;
sorting and filtering; untrusted text is escaped in every page that shows it."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from arena_ops.airflow.auth import airflow_user
from arena_ops.store import ArtifactStore
from arena_ops.ui.app import create_app
from tests.conftest import HOSTILE


@pytest.fixture
def client(seeded: ArtifactStore) -> TestClient:
    app = create_app(lambda: seeded, airflow_user)
    app.dependency_overrides[airflow_user] = lambda: "tester"  # the login itself is proven in the e2e test
    return TestClient(app)


def _paths(app) -> list[str]:
    filled = {"{iteration}": "1", "{run}": "shard-001", "{battle_id}": "x"}
    out = []
    for route in app.routes:
        path = route.path
        for k, v in filled.items():
            path = path.replace(k, v)
        out.append(path + ("?flywheel=ui" if isinstance(route, APIRoute) else ""))
    return out


def test_every_route_refuses_anonymous_requests(seeded: ArtifactStore) -> None:
    # Airflow's real dependency; with no token it refuses before it needs an auth manager. Bad tokens and a real
    # login are checked against `airflow standalone` in tests/integration/test_airflow_standalone.py.
    app = create_app(lambda: seeded, airflow_user)
    anon = TestClient(app)
    paths = _paths(app)
    assert len(paths) >= 9
    for path in [*paths, "/docs", "/openapi.json", "/redoc"]:
        res = anon.get(path)
        assert res.status_code in (401, 403, 404), (path, res.status_code)
        assert "alpha" not in res.text, path  # nothing of the store leaks
    assert all(anon.get(p).status_code in (401, 403) for p in paths)  # routes that exist: refused, not missing


def test_json_shapes(client: TestClient) -> None:
    fws = client.get("/api/flywheels").json()
    assert fws == [
        {
            "flywheel": "ui",
            "scopes": [
                # 72 rows, but beta vs gamma battled the same answers in all three runs: one battle each, rated once.
                {"scope": "all", "label": "All battles", "battles": 56},
                {"scope": "eval-mix", "label": "Test set mix", "battles": 24},
                {"scope": "bench-wizard", "label": "Benchmark wizard", "battles": 24},
            ],
        }
    ]
    board = client.get("/api/leaderboard", params={"flywheel": "ui"}).json()
    assert board["ci_level"] == 0.95 and [r["model"] for r in board["rows"]][-1] == "gamma"
    assert {"model", "rating", "ci_low", "ci_high", "rank", "wins", "losses", "ties", "battles"} <= set(
        board["rows"][0]
    )
    assert sum(r["battles"] for r in board["rows"]) == 2 * 56
    mix = client.get("/api/leaderboard", params={"flywheel": "ui", "scope": "eval-mix"}).json()
    assert {r["model"] for r in mix["rows"]} == {"alpha@i0-sft", "beta", "gamma"}

    wr = client.get("/api/win-rates", params={"flywheel": "ui"}).json()
    m = {name: k for k, name in enumerate(wr["models"])}
    assert wr["matrix"][m["gamma"]][m["gamma"]] is None
    assert wr["matrix"][m["alpha@i1-sft"]][m["gamma"]] == 1.0  # alpha always right, gamma never
    assert wr["matrix"][m["alpha@base"]][m["alpha@i1-sft"]] is None  # versions of the target never meet

    hist = client.get("/api/history", params={"flywheel": "ui"}).json()
    assert [e["iteration"] for e in hist["entries"]] == [0, 1]
    assert [t["model"] for t in hist["target"]] == ["alpha@base", "alpha@i1-sft"]

    rounds = client.get("/api/rounds", params={"flywheel": "ui"}).json()
    assert [r["iteration"] for r in rounds] == [1, 0]
    assert {x["run"] for x in rounds[0]["runs"]} == {"sft-shard-001", "eval-mix"}
    assert {x["model"] for x in rounds[0]["runs"]} == {"alpha@i1-sft", "alpha@i0-sft"}
    assert rounds[1]["dag_run"]["run_id"] == "manual__2026-01-01T00:00:00+00:00"


def test_battle_filters_and_paging(client: TestClient) -> None:
    get = lambda **p: client.get("/api/battles", params={"flywheel": "ui", **p}).json()  # noqa: E731
    assert get()["total"] == 72 and len(get(limit=10)["battles"]) == 10
    # The target appears under the label of the version that battled, as on the boards.
    pair = get(model_a="gamma", model_b="alpha@i1-sft")
    assert pair["total"] == 8 and all(
        {b["model_a"], b["model_b"]} == {"alpha@i1-sft", "gamma"} for b in pair["battles"]
    )
    assert get(model_a="alpha@i1-sft", model_b="gamma")["total"] == 8  # either order
    assert get(model_a="alpha")["total"] == 0 and get(model_a="alpha@i0-sft", run="eval-mix")["total"] == 16
    won = get(verdict="beta")["battles"]
    assert won and all(b[b["winner"]] == "beta" for b in won)
    assert all(b["winner"] == "tie" for b in get(verdict="tie")["battles"])
    assert {b["prompt_id"] for b in get(prompt="3 plus 3")["battles"]} == {
        get(prompt="3 plus 3")["battles"][0]["prompt_id"]
    }
    assert get(prompt="3 plus 3")["total"] == 9  # 3 pairs × 3 runs
    assert get(iteration=1, run="eval-mix")["total"] == 24
    form = {"flywheel": "ui", "model_a": "beta", "model_b": "", "verdict": "", "prompt": "", "iteration": "", "run": ""}
    assert client.get("/battles", params=form).status_code == 200  # the filter form's empty fields mean "any"
    assert re.search(r"<p>48 battles", client.get("/battles", params=form).text)
    assert client.get("/api/battles", params={"flywheel": "ui", "iteration": "x"}).status_code == 422
    page2 = get(offset=70)
    assert len(page2["battles"]) == 2
    assert client.get("/api/battles", params={"flywheel": "ui", "limit": 0}).status_code == 422


def test_unknown_names_are_404_not_paths(client: TestClient) -> None:
    for params in ({"flywheel": "nope"}, {"flywheel": "ui", "scope": "../../etc"}, {"flywheel": "../ui"}):
        res = client.get("/api/leaderboard", params=params)
        assert res.status_code == 404 and "no " in res.json()["detail"]
    assert client.get("/api/battles/1/../x", params={"flywheel": "ui"}).status_code == 404
    assert client.get("/battles/1/shard-001/nope", params={"flywheel": "ui"}).status_code == 404


def test_pages_render_and_sort(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    models = re.findall(r'<tr data-model="([^"]+)">', page.text)
    assert models[-1] == "gamma" and set(models) == {"alpha@base", "alpha@i0-sft", "alpha@i1-sft", "beta", "gamma"}
    by_name = re.findall(r'<tr data-model="([^"]+)">', client.get("/", params={"sort": "model", "order": "desc"}).text)
    assert by_name == sorted(models, reverse=True)
    for marker in ('id="elo-ci"', 'id="history"', 'id="win-rates"', "runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"):
        assert marker in page.text
    assert client.get("/", params={"sort": "nope"}).status_code == 422
    mix = client.get("/", params={"scope": "eval-mix"}).text
    assert 'data-model="alpha@base"' not in mix and 'data-model="alpha@i0-sft"' in mix
    bench = client.get("/", params={"scope": "bench-wizard"}).text  # an `arena bench` board, like a flywheel's
    assert re.findall(r'<tr data-model="([^"]+)">', bench) == ["alpha", "beta", "gamma"]
    assert "Benchmark wizard" in page.text
    # The judge's canary round over round, and each round's canary and promotion in the rounds table.
    assert 'id="canary"' in page.text and "■ agreement" in page.text and "■ drift" in page.text
    assert "<strong>gate breached</strong>: drift 0.300 &gt; judge.gate.max_drift 0.2" in page.text
    assert "alpha@base (keep; P(alpha@i1-sft) 0.60)" in page.text
    assert "<strong>waits for approval</strong>" in page.text  # round 1's decision waits for a person
    # Each round's cost ledger: money, tokens, and the training job's seconds in the cell's title.
    assert "0.0100 USD" in page.text and "0.0200 USD" in page.text and "train-sft: 120 s wall, 72 s CPU" in page.text


def test_untrusted_text_is_escaped(client: TestClient) -> None:
    found = client.get(
        "/api/battles", params={"flywheel": "ui", "model_a": "gamma", "prompt": "0 plus 0", "run": "sft-shard-000"}
    ).json()["battles"]
    b = found[0]
    detail = client.get(f"/api/battles/{b['iteration']}/{b['run']}/{b['battle_id']}", params={"flywheel": "ui"}).json()
    side = "a" if detail["record"]["model_a"] == "gamma" else "b"
    assert detail[f"answers_{side}"] == [HOSTILE]  # the JSON carries the text as it is

    html = client.get(f"/battles/{b['iteration']}/{b['run']}/{b['battle_id']}", params={"flywheel": "ui"}).text
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert (
        "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror=&#34;window.__pwned = 2&#34;&gt;" in html
    )
    assert "<script" not in html.lower()  # the page itself runs no script at all
    csp = client.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp  # and the browser is told to run none

    listing = client.get("/battles", params={"flywheel": "ui", "prompt": "<script>"}).text
    assert "<script>" not in listing and 'value="&lt;script&gt;"' in listing


def test_a_store_that_cannot_be_read_is_a_clear_500(tmp_path) -> None:
    from arena_ops.errors import ConfigError

    def broken() -> ArtifactStore:
        raise ConfigError(f"{tmp_path}/arena.yaml: storage.root: expected a file:// or s3:// URI")

    app = create_app(broken, airflow_user)
    app.dependency_overrides[airflow_user] = lambda: "tester"
    client = TestClient(app)
    res = client.get("/")
    assert res.status_code == 500 and "storage.root: expected" in res.text and "cannot read its store" in res.text
    assert client.get("/api/flywheels").json()["detail"].endswith("expected a file:// or s3:// URI")


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1e3", "-1", "9" * 40])
def test_query_parameters_are_validated_not_500(client: TestClient, value: str) -> None:
    res = client.get("/api/battles", params={"flywheel": "ui", "iteration": value})
    assert res.status_code == 422, (value, res.status_code)
    assert client.get("/battles", params={"flywheel": "ui", "iteration": value}).status_code == 422


def test_every_response_carries_the_security_headers(seeded: ArtifactStore, tmp_path) -> None:
    """200s, 404s, 422s, the store-error 500 and an unexpected exception's 500: CSP, nosniff, no-store."""
    from arena_ops.errors import ConfigError

    def broken() -> ArtifactStore:
        raise ConfigError("storage.root: unreadable")

    def crashing() -> ArtifactStore:
        raise RuntimeError("a bug")

    responses = []
    for store in (lambda: seeded, broken, crashing):
        app = create_app(store, airflow_user)
        app.dependency_overrides[airflow_user] = lambda: "tester"
        c = TestClient(app, raise_server_exceptions=False)
        responses += [c.get("/", params={"flywheel": "ui"}), c.get("/api/flywheels")]
        responses += [c.get("/api/leaderboard", params={"flywheel": "nope"})]
        responses += [c.get("/api/battles", params={"flywheel": "ui", "iteration": "\u00b2"})]
    assert {r.status_code for r in responses} >= {200, 404, 422, 500}
    for r in responses:
        assert r.headers["Cache-Control"] == "no-store", r.status_code
        assert (
            r.headers["X-Content-Type-Options"] == "nosniff"
            and "default-src 'none'" in r.headers["Content-Security-Policy"]
        ), r.status_code
        assert "a bug" not in r.text  # an unexpected error's text stays in the log


def test_paging_reads_only_the_page_and_matches_a_full_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of several battle runs, each in several row groups, with and without filters, equal the same rows cut
    from a full read; an empty run and a run that only the filter empties are skipped."""
    import pyarrow as pa

    from arena_ops import store as store_module
    from arena_ops.ui.data import _LIST_COLUMNS, ArenaReader, BattleFilter

    monkeypatch.setattr(store_module, "ROW_GROUP_ROWS", 4)
    store = ArtifactStore.from_uri(f"file://{tmp_path}")
    models, verdicts = ["t", "x", "y"], ["model_a", "model_b", "tie"]
    for it, n in ((0, 11), (1, 0), (2, 17)):
        rows = [
            {
                "battle_id": f"b{it}-{k}",
                "prompt_id": f"p{k}",
                "iteration": it,
                "run": "sft-shard-000",
                "model_a": models[k % 3],
                "model_b": models[(k + 1) % 3],
                "winner": verdicts[(k * 7 + it) % 3],
                "score_a": float(k),
                "score_b": 1.0,
            }
            for k in range(n)
        ]
        schema = pa.schema(
            [
                (c, pa.int64() if c == "iteration" else pa.float64() if "score" in c else pa.string())
                for c in _LIST_COLUMNS
            ]
        )
        with store.artifact("pg", it, "battles", "sft-shard-000", meta={"target_label": "t@i0-sft"}) as w:
            w.write_table("data.parquet", pa.Table.from_pylist(rows, schema=schema))
            w.write_table("invalid.parquet", schema.empty_table())
    reader = ArenaReader(store)
    full = [store.read_table(f"pg/iter={it}/battles/sft-shard-000/data.parquet") for it in (2, 0)]  # newest first
    everything = pa.concat_tables(full).to_pylist()
    for row in everything:
        row.update({side: "t@i0-sft" if row[side] == "t" else row[side] for side in ("model_a", "model_b")})
    filters = {
        BattleFilter(): lambda r: True,
        BattleFilter(model_a="t@i0-sft"): lambda r: "t@i0-sft" in (r["model_a"], r["model_b"]),
        BattleFilter(verdict="tie"): lambda r: r["winner"] == "tie",
        BattleFilter(model_a="x", model_b="y", verdict="model_b"): lambda r: (
            {r["model_a"], r["model_b"]} == {"x", "y"} and r["winner"] == "model_b"
        ),
    }
    assert store.read_table("pg/iter=2/battles/sft-shard-000/data.parquet").num_rows == 17
    for f, keep in filters.items():
        want = [r for r in everything if keep(r)]
        for offset, limit in [(0, 1), (2, 3), (3, 7), (9, 5), (16, 4), (0, 50), (len(want), 5)]:
            got = reader.battles("pg", f, offset, limit)
            assert got["total"] == len(want), f
            assert got["battles"] == want[offset : offset + limit], (f, offset, limit)
        assert reader.battles("pg", f, 0, 1)["models"] == ["t@i0-sft", "x", "y"]


def test_the_view_lists_every_flywheel_of_the_folder_and_switches_by_url(seeded: ArtifactStore, tmp_path) -> None:
    """The plugin hands the app the folder's flywheels, each with its own store: a flywheel with nothing written yet
    is listed too (an empty board that says which DAG to run), and the URL carries the flywheel."""
    empty = ArtifactStore.from_uri(f"file://{tmp_path}/other-store")
    app = create_app(lambda: {"ui": seeded, "ablation-k3": empty}, airflow_user)
    app.dependency_overrides[airflow_user] = lambda: "tester"
    c = TestClient(app)
    page = c.get("/").text
    assert "flywheel=ablation-k3" in page and "<code>ui</code>" in page  # the first flywheel, and a link to the other
    other = c.get("/", params={"flywheel": "ablation-k3"})
    assert other.status_code == 200 and "arena_flywheel_round__ablation_k3" in other.text
    assert [f["flywheel"] for f in c.get("/api/flywheels").json()] == ["ui", "ablation-k3"]
    assert c.get("/api/leaderboard", params={"flywheel": "ui"}).json()["rows"]
    assert c.get("/api/leaderboard", params={"flywheel": "nope"}).status_code == 404
    # a store holding another flywheel's artifacts never shows them under this one's name
    assert c.get("/api/rounds", params={"flywheel": "ablation-k3"}).json() == []
