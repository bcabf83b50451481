"""The ``arena`` command: one subcommand per stage, each a thin call into the library (``main`` builds the app;
``common``, ``stages``, ``round`` and ``stack`` hold the subcommand groups)."""

from arena_ops.cli.main import app, main

__all__ = ["app", "main"]
