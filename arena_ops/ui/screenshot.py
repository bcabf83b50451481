"""Pictures of the Arena view of a running stack, as a user sees it after logging in to the Airflow UI (Chromium
through Playwright, the `dev` extra; `make browser` installs Chromium). The README's pictures come from here:

    .venv/bin/python -m arena_ops.ui.screenshot --config configs/demo.yaml --out docs-dir

writes ``arena-board.png`` (the Mix leaderboard with its interval chart) and ``arena-history.png`` (the target's Elo
round over round) of the config's flywheel.
"""

from __future__ import annotations

import argparse
import json
import os
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


def shoot(url: str, user: str, password: str, flywheel: str, scope: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    board, history = out / "arena-board.png", out / "arena-history.png"
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
            page.screenshot(path=str(board), full_page=False)
            chart = page.locator("#history")
            chart.scroll_into_view_if_needed()
            chart.screenshot(path=str(history))
        finally:
            browser.close()
    return [board, history]


def main(argv: list[str] | None = None) -> None:
    from arena_ops.config import load_config
    from arena_ops.local.stack import Stack

    p = argparse.ArgumentParser(prog="python -m arena_ops.ui.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.yaml", help="the stack's config")
    p.add_argument("--scope", default="eval-mix", help="leaderboard scope (default: the Mix test set's)")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    stack = Stack(cfg, Path(args.config))
    user, password = next(iter(json.loads((stack.airflow_home / "passwords.json").read_text()).items()))
    for path in shoot(stack.airflow_url, user, password, cfg.flywheel, args.scope, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
