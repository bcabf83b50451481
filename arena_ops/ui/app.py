"""The Arena UI: a small FastAPI app (HTML pages + the JSON they are drawn from) that the Airflow plugin mounts.

Pages are rendered on the server with Jinja2 autoescaping — responses, explanations and prompts are untrusted text
and are only ever inserted as escaped text, never as markup or script. No JavaScript is needed: sorting and
filtering are query parameters, so every view is a plain link.

Authentication is not optional: :func:`create_app` takes the dependency that resolves the user and attaches it to
every route (the API docs routes, which would bypass it, are switched off). The Airflow plugin passes
:func:`arena_ops.airflow.auth.airflow_user`, the same JWT the Airflow UI uses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from arena_ops.errors import ArenaError
from arena_ops.flywheels import ENV
from arena_ops.store import ArtifactStore
from arena_ops.ui import charts
from arena_ops.ui.data import VERDICTS, ArenaReader, BattleFilter, NotFound

URL_PREFIX = "/arena"
SORTABLE = ("rank", "model", "rating", "ci_low", "ci_high", "wins", "losses", "ties", "battles")
PAGE_SIZE = 50
log = logging.getLogger(__name__)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'self'"

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["q"] = lambda s: quote(str(s), safe="")  # one path segment (run ids carry ':' and '+')
_templates.globals["heat_color"] = charts.heat_color


Stores = Callable[[], "ArtifactStore | Mapping[str, ArtifactStore]"]
# (dag_id, run_id, user) → the DAG run's state and task instances, or None (the Airflow plugin passes
# arena_ops.airflow.runs.dag_run_tasks; without it a round page shows what the store knows).
DagRuns = Callable[[str, str, Any], "dict[str, Any] | None"]


def _reader(request: Request, flywheel: str | None = None) -> ArenaReader:
    """The reader of the asked flywheel's store. The app is given either one store (every flywheel it holds) or the
    flywheel folder's flywheels, each with its own store (flywheels may live in different buckets)."""
    stores = request.app.state.stores()
    if isinstance(stores, ArtifactStore):
        return ArenaReader(stores)
    names = list(stores)
    if not names:
        raise NotFound(f"the flywheel folder (${ENV}) has no flywheel config")
    chosen = flywheel if flywheel in stores else names[0]
    if flywheel is not None and flywheel not in stores:
        raise NotFound(f"no flywheel {flywheel!r} in the flywheel folder (have {names})")
    return ArenaReader(stores[chosen], names)


Reader = Annotated[ArenaReader, Depends(_reader)]


def create_app(stores: Stores, require_user: Callable[..., Any], dag_runs: DagRuns | None = None) -> FastAPI:
    """``stores`` is called per request (the plugin caches it) and returns one store or flywheel → store;
    ``require_user`` guards every route; ``dag_runs`` reads a round's DAG run for its page."""
    app = FastAPI(
        title="Arena",
        dependencies=[Depends(require_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    app.state.stores = stores
    who = Depends(require_user)  # the user, for the DAG run's permissions (resolved once per request)

    def round_page(r: ArenaReader, flywheel: str, iteration: int, user: Any) -> dict[str, Any]:
        page = r.round_page(flywheel, iteration)
        run = page["dag_run"]
        page["airflow"] = airflow = dag_runs(run["dag_id"], run["run_id"], user) if dag_runs and run else None
        for t in airflow["tasks"] if airflow else ():
            name = t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")
            if t["state"] in ("failed", "upstream_failed"):
                page["problems"].append({"where": f"task {name}", "reason": f"{t['state']} (try {t['try_number']})"})
            elif t["failed_tries"]:
                tries = ", ".join(map(str, t["failed_tries"]))
                page["problems"].append(
                    {"where": f"task {name}", "reason": f"try {tries} failed; {t['state']} on try {t['try_number']}"}
                )
        return page

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Any:
        # On every response, error pages included: no script (defence in depth behind the escaping — the pages need
        # none), no content sniffing, and no caching of what only a logged-in user may see.
        try:
            response = await call_next(request)
        except Exception:  # an unexpected error: a plain 500 that still carries the headers, not Starlette's page
            log.exception("Arena view: %s failed", request.url.path)
            response = PlainTextResponse("Internal error; see the webserver log.", status_code=500)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    @app.exception_handler(ArenaError)
    async def arena_error(request: Request, exc: ArenaError) -> Any:
        # NotFound → 404; anything else (a config that does not load, an unreachable store) → 500, saying what.
        code = 404 if isinstance(exc, NotFound) else 500
        if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=code)
        title = "Not found" if code == 404 else "The Arena cannot read its store"
        return HTMLResponse(_render("error.html", request, title=title, message=str(exc)), status_code=code)

    # JSON ----------------------------------------------------------------------------------------------------------

    @app.get("/api/flywheels")
    def api_flywheels(r: Reader) -> list[dict[str, Any]]:
        return [{"flywheel": f, "scopes": r.scopes(f)} for f in r.flywheels()]

    @app.get("/api/leaderboard")
    def api_leaderboard(r: Reader, flywheel: str, scope: str = "all") -> dict[str, Any]:
        return r.leaderboard(flywheel, scope)

    @app.get("/api/win-rates")
    def api_win_rates(r: Reader, flywheel: str, scope: str = "all") -> dict[str, Any]:
        return r.win_rates(flywheel, scope)

    @app.get("/api/history")
    def api_history(r: Reader, flywheel: str) -> dict[str, Any]:
        return r.history(flywheel)

    @app.get("/api/rounds")
    def api_rounds(r: Reader, flywheel: str) -> list[dict[str, Any]]:
        return r.rounds(flywheel)

    @app.get("/api/rounds/{iteration}")
    def api_round(r: Reader, flywheel: str, iteration: int, user: Any = who) -> dict[str, Any]:
        return round_page(r, flywheel, iteration, user)

    @app.get("/api/progress")
    def api_progress(r: Reader, flywheel: str) -> dict[str, Any]:
        return r.progress(flywheel)

    @app.get("/api/battles")
    def api_battles(
        r: Reader,
        flywheel: str,
        f: Annotated[BattleFilter, Depends(_battle_filter)],
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        return r.battles(flywheel, f, offset, limit)

    @app.get("/api/battles/{iteration}/{run}/{battle_id}")
    def api_battle(r: Reader, flywheel: str, iteration: int, run: str, battle_id: str) -> dict[str, Any]:
        return r.battle(flywheel, iteration, run, battle_id)

    # HTML ----------------------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def index(
        request: Request,
        r: Reader,
        flywheel: str | None = None,
        scope: str = "all",
        sort: str = "rank",
        order: str = "asc",
    ) -> str:
        flywheels = r.flywheels()
        if not flywheels:
            return _render("empty.html", request, store=r.store.uri)
        flywheel = flywheel or flywheels[0]
        scopes = r.scopes(flywheel)
        if not scopes:
            return _render("empty.html", request, store=r.store.uri, flywheel=flywheel, flywheels=flywheels)
        if sort not in SORTABLE or order not in ("asc", "desc"):
            raise HTTPException(422, f"sort must be one of {SORTABLE} and order asc|desc")
        board = r.leaderboard(flywheel, scope)
        # Ties (a shared rank, equal counts) fall back to the rating, best first, then the name.
        rows = sorted(board["rows"], key=lambda row: row["model"])
        rows = sorted(rows, key=lambda row: -(row.get("rating") or 0.0))
        rows = sorted(rows, key=lambda row: row[sort], reverse=order == "desc")
        hist = r.history(flywheel)
        rounds = r.rounds(flywheel)
        progress = r.progress(flywheel)
        return _render(
            "index.html",
            request,
            flywheel=flywheel,
            flywheels=flywheels,
            scope=scope,
            scopes=scopes,
            board=board,
            rows=rows,
            sort=sort,
            order=order,
            columns=SORTABLE,
            elo_chart=charts.elo_ci(board["rows"]),
            history_chart=charts.history(hist["entries"], hist["target"]),
            progress=progress,
            progress_chart=charts.progress(progress),
            heat=r.win_rates(flywheel, scope),
            rounds=rounds,
            canary_chart=charts.canary(rounds),
        )

    @app.get("/battles", response_class=HTMLResponse)
    def battles_page(
        request: Request,
        r: Reader,
        flywheel: str,
        f: Annotated[BattleFilter, Depends(_battle_filter)],
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> str:
        found = r.battles(flywheel, f, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        query = {k: v for k, v in vars(f).items() if v not in (None, "")}
        return _render(
            "battles.html",
            request,
            flywheel=flywheel,
            found=found,
            f=f,
            page=page,
            pages=max(1, -(-found["total"] // PAGE_SIZE)),
            verdicts=VERDICTS,
            query=lambda **extra: urlencode({"flywheel": flywheel, **query, **extra}),
        )

    @app.get("/rounds/{iteration}", response_class=HTMLResponse)
    def round_html(request: Request, r: Reader, flywheel: str, iteration: int, user: Any = who) -> str:
        page = round_page(r, flywheel, iteration, user)
        return _render("round.html", request, flywheel=flywheel, rd=page, flywheels=r.flywheels())

    @app.get("/battles/{iteration}/{run}/{battle_id}", response_class=HTMLResponse)
    def battle_page(request: Request, r: Reader, flywheel: str, iteration: int, run: str, battle_id: str) -> str:
        b = r.battle(flywheel, iteration, run, battle_id)
        return _render("battle.html", request, flywheel=flywheel, b=b, r=b["record"])

    return app


def _battle_filter(
    model_a: str | None = None,
    model_b: str | None = None,
    verdict: str | None = None,
    prompt: str | None = None,
    iteration: str | None = None,  # str: the filter form submits an empty field for "any"
    run: str | None = None,
) -> BattleFilter:
    def blank(v: str | None) -> str | None:
        return v if v and v.strip() else None  # an empty form field means "any"

    it = blank(iteration)
    if it is not None and not re.fullmatch(r"[0-9]{1,9}", it.strip()):  # ASCII: "²".isdigit() is True
        raise HTTPException(422, f"iteration must be a non-negative integer, got {iteration[:40]!r}")
    return BattleFilter(
        blank(model_a), blank(model_b), blank(verdict), blank(prompt), int(it) if it else None, blank(run)
    )


def _render(template: str, request: Request, **context: Any) -> str:
    root = request.scope.get("root_path", "")  # "/arena", or deeper behind a proxy: links stay relative to it
    airflow_root = root.removesuffix(URL_PREFIX)
    return _templates.get_template(template).render(app_root=root, airflow_root=airflow_root, **context)
