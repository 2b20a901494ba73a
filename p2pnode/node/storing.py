"""The node's message store (docs/store.md): opened with the node, its batches put back
in the router when the node starts, and every batch the router keeps written to it.

Off (``Storing.service`` None) with ``--store none``, and for a node given its
identity (tests, simulations) unless ``store`` names a file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import trio

from ..config import NodeConfig
from ..gossip.history import item_id_range
from ..gossip.restore import restore
from ..gossip.router import Router
from ..store.db import STORE_FILE, MessageStore, Row
from ..store.reading import decode_row, stored_runs
from ..store.service import StoreService, wall_age
from ..wire.messages import Batch, BatchBody

log = logging.getLogger("p2pnode.store")


def store_path(config: NodeConfig, owns_data_dir: bool) -> Path | None:
    """Where the node keeps its store, or None for none."""
    if config.store == "none":
        return None
    if config.store == "sqlite":
        return config.data_dir / STORE_FILE if owns_data_dir else None
    return Path(config.store).expanduser()


class Storing:
    """The store of one node. Raises ``StoreBroken`` when the file cannot be used."""

    def __init__(self, config: NodeConfig, router: Router, path: Path | None) -> None:
        self.config = config
        self.router = router
        self.service: StoreService | None = None
        self.restored = 0  # batches put back in history at the start
        self.unreadable = 0  # stored batches that could not be decoded (left out)
        if path is not None:
            store = MessageStore(path, sync=config.store_sync, max_age=config.store_age,
                                 max_bytes=config.store_bytes)
            store.node_id = router.node_id
            self.service = StoreService(store)
            router.on_kept = self._keep

    def claim_epoch(self, epoch: int) -> int:
        """This run's number, higher than any stored run's (``MessageStore.claim_epoch``)."""
        return epoch if self.service is None else self.service.store.claim_epoch(epoch)

    async def start(self, nursery: trio.Nursery) -> None:
        """Put the stored history back in the router, then start writing."""
        if self.service is None:
            return
        cfg = self.config
        now = trio.current_time()
        store = self.service.store
        rows = await self.service.call(
            store.newest, cfg.history_batches, cfg.history_bytes,
            wall_age(now - cfg.history_age, now))
        batches = []
        wall = time.time()
        for row in rows:
            decoded = decode_row(row)
            if decoded is None:
                self.unreadable += 1
                continue
            batches.append((*decoded, now - (wall - row.age)))
        if self.unreadable:
            log.warning("message store %s: %d stored batches could not be read; left out",
                        store.path, self.unreadable)
        runs = await self.service.call(stored_runs, store, self.router.order.max_ranges)
        self.restored = restore(self.router, batches, now, runs)
        if rows:
            log.info("message store %s: %d batches put back in history (%d stored)",
                     store.path, self.restored, store.rows)
        await nursery.start(self.service.run)

    def close(self) -> None:
        """Close the file if the service did not (the node stopped before it started)."""
        if self.service is not None:
            self.service.store.close()

    def _keep(self, batch: Batch, body: BatchBody, age: float) -> None:
        assert self.service is not None
        first, last = item_id_range([item.id for item in body.items])
        self.service.keep(Row(batch.origin, body.epoch, body.seq, batch.id, first, last,
                              wall_age(age, trio.current_time()), len(body.items),
                              msgspec.msgpack.encode(batch)))
