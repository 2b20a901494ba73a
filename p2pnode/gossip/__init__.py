"""Gossip logic without I/O, driven by the caller's clock: the router (``router``) and
the actions it returns (``actions``), its broadcast trees (``tree``) and repair
(``repair``), the seen-cache (``seen``), the history (``history``), per-origin order
(``order``), interest routing's trees (``routes``), replays (``replay``), retained
messages and their sync (``retained``, ``retained_sync``) and batch signatures
(``signing``, loaded on first use: it needs ``cryptography``).

This package never imports trio or zeroconf (tests/test_layering.py checks it).
"""

from typing import TYPE_CHECKING

from .. import _lazy
from .actions import Action, Deliver, Disconnect, Forward, Send, Verify
from .history import Entry, History, item_id_range
from .order import OrderBuffer, OrderStats
from .repair import MissingBatches
from .replay import Replay
from .retained import RetainedEntry, RetainedReplay, RetainedStats, RetainedStore, topic_key
from .retained_sync import RetainedSync, SyncStats
from .router import GossipMode, Router, RouterConfig, RouterStats
from .routes import Routes
from .seen import SeenCache
from .tree import Trees

if TYPE_CHECKING:
    from .signing import Verifier, make_batch, sign_batch

__all__ = [
    "Action", "Deliver", "Disconnect", "Entry", "Forward", "GossipMode", "History",
    "MissingBatches", "OrderBuffer", "OrderStats", "Replay", "RetainedEntry", "RetainedReplay",
    "RetainedStats", "RetainedStore", "RetainedSync", "Router", "RouterConfig", "RouterStats",
    "Routes",
    "SeenCache", "Send", "SyncStats", "Trees", "Verifier", "Verify", "item_id_range",
    "make_batch", "sign_batch", "topic_key",
]
__getattr__ = _lazy(__name__, {"signing": ("Verifier", "make_batch", "sign_batch")})
