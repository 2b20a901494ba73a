"""``python -m p2pnode.cli``: the ``p2pnode`` command."""

from .main import main

raise SystemExit(main())
