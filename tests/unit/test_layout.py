"""The package layout shows the architecture: the core library imports neither the CLI nor the local-stack tooling
(one screenshot tool aside), and the Airflow adapters live in a package of their own."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EDGES = ("arena_ops/cli/", "arena_ops/local/", "arena_ops/airflow/")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def core_modules() -> list[Path]:
    return [p for p in sorted(REPO.glob("arena_ops/**/*.py")) if not str(p.relative_to(REPO)).startswith(EDGES)]


def test_the_core_imports_no_cli_and_no_local_tooling() -> None:
    bad = {}
    for path in core_modules():
        rel = str(path.relative_to(REPO))
        mods = {m for m in imports(path) if m.startswith(("arena_ops.cli", "arena_ops.local"))}
        if rel == "arena_ops/ui/screenshot.py":  # a tool: it finds the running stack to screenshot
            mods -= {"arena_ops.local.stack"}
        if mods:
            bad[rel] = sorted(mods)
    assert bad == {}


def test_airflow_is_asked_for_connections_in_one_place() -> None:
    users = [str(p.relative_to(REPO)) for p in core_modules() if any(m.startswith("airflow") for m in imports(p))]
    assert users == [], f"the core imports Airflow directly in {users}: go through arena_ops.airflow"


def test_the_root_package_holds_the_core_only() -> None:
    root = sorted(p.stem for p in (REPO / "arena_ops").glob("*.py") if p.stem != "__init__")
    for gone in ("cli", "cli_common", "cli_round", "cli_stack", "cli_stages", "airflow_api", "airflow_training",
                 "stack", "demo", "demo_model"):  # fmt: skip
        assert gone not in root
    assert {"config", "store", "layout", "round", "flywheel", "catalogue", "revisions", "flywheels"} <= set(root)


def test_paths_the_package_finds_from_its_own_place_exist() -> None:
    """Modules that locate the checkout from ``__file__`` (the stack's dags and plugins folders, the demo's configs,
    the Helm chart) still find it after the move into subpackages."""
    from arena_ops import helm_schema
    from arena_ops.local import demo, stack

    assert stack.REPO == demo.REPO == REPO
    for path in (stack.REPO / "dags", stack.REPO / "plugins", demo.REPO / "configs" / "demo.yaml", helm_schema.CHART):
        assert path.exists(), path
