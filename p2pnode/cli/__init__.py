"""The ``p2pnode`` command and what only it needs: the config file, logging, the status
view, Prometheus metrics and systemd notification."""

from .main import main

__all__ = ["main"]
