"""``python -m p2pnode``: the ``p2pnode`` command."""

from .cli.main import main

raise SystemExit(main())
