"""The ``p2pnode`` command (``main``; its flags in ``parser``, the client commands in
``commands``) and what only it needs: logging (``logs``), the status view
(``statusview``), Prometheus metrics (``metrics``) and systemd notification
(``sdnotify``)."""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
