"""Pictures of the Arena view of a running stack, as a user sees it after logging in to the Airflow UI (Chromium
through Playwright, the `dev` extra; `make browser` installs Chromium). The README's pictures come from here:

    .venv/bin/python -m arena_ops.ui.screenshot --out docs-dir

writes, for the running stack's flywheel (or --config's): ``arena-board.png`` (the top of the view: the target's
progress on the Mix board and the leaderboard), ``arena-progress.png`` (the progress chart alone),
``arena-history.png`` (the all-battles board round over round) and ``arena-round.png`` (the page of the newest
round).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("ARENA_CHROMIUM", "/usr/bin/chromium")
# As root and on a machine without outside network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def check_browser() -> None:
    """Exit with the command that fixes it when Playwright or Chromium is missing (before anything else is done)."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        raise SystemExit("Playwright is not installed: `make setup` installs it (the dev extra of arena-flywheel)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise SystemExit(
            f"Chromium not found at {CHROMIUM}: run `make browser` (installs Debian's chromium), "
            "or set ARENA_CHROMIUM to a Chromium binary"
        )


def shoot(url: str, user: str, password: str, flywheel: str, scope: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"arena-{k}.png" for k in ("board", "progress", "history", "round")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}/plugin/arena")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/plugin/arena", timeout=60_000)
            # The view itself, at the wanted board (the UI embeds it in an iframe at /arena/).
            page.goto(f"{url}/arena/?flywheel={flywheel}&scope={scope}")
            expect(page.locator("#leaderboard tbody tr").first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(paths["board"]), full_page=False)
            for name in ("progress", "history"):
                chart = page.locator(f"#{name}")
                chart.scroll_into_view_if_needed()
                chart.screenshot(path=str(paths[name]))
            newest = page.locator("#rounds td a").first
            newest.click()
            expect(page.locator("#steps")).to_be_visible(timeout=60_000)
            page.screenshot(path=str(paths["round"]), full_page=True)
        finally:
            browser.close()
    return list(paths.values())


def main(argv: list[str] | None = None) -> None:
    from arena_ops.config import load_config
    from arena_ops.local.stack import Stack

    p = argparse.ArgumentParser(prog="python -m arena_ops.ui.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", default=None, help="the stack's config (default: $ARENA_CONFIG, else the running stack's)"
    )
    p.add_argument("--scope", default="eval-mix", help="leaderboard scope (default: the Mix test set's)")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    args = p.parse_args(argv)
    check_browser()
    config = args.config or os.environ.get("ARENA_CONFIG")
    if config is None:
        from arena_ops.local.stack import StackError, running_config

        try:
            config = str(running_config())
        except StackError as exc:
            raise SystemExit(str(exc)) from None
        print(f"the running stack's config: {config}", file=sys.stderr)
    cfg = load_config(config)
    stack = Stack(cfg, Path(config))
    user, password = next(iter(json.loads((stack.airflow_home / "passwords.json").read_text()).items()))
    for path in shoot(stack.airflow_url, user, password, cfg.flywheel, args.scope, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
