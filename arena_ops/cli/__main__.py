"""``python -m arena_ops.cli``: the ``arena`` command."""

from arena_ops.cli.main import main

main()
