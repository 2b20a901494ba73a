"""The failure detector's timers (SWIM with indirect probes, Lifeguard's suspicion).

A node watches its own links (the glue tells it when one goes silent or closes without
a goodbye). Before it suspects the peer it asks up to ``probe_k`` other peers whether
they still hear it (``ProbeReq``); one ``alive`` answer (``ProbeAck``) within
``probe_timeout`` clears it. Otherwise the node floods a suspicion; the member has
``suspicion_timeout`` seconds to refute it, less the more members independently
confirm it. Pure: the clock is the caller's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..wire.messages import ProbeAck, ProbeReq


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's timings (docs/failures.md)."""

    ping_interval: float = 1.0
    probe_k: int = 3  # peers asked to vouch for a silent one
    probe_timeout: float = 0.5  # how long their answers are awaited
    suspicion_min: float = 1.5  # the shortest time a suspect has to refute
    suspicion_mult: float = 3.0  # the longest: mult x log10(members + 1) x ping_interval


@dataclass
class Probe:
    """An indirect probe under way."""

    target: bytes
    nonce: int
    deadline: float
    helpers: tuple[bytes, ...]


class Detector:
    """The probes under way and the suspicion timeout.

    Args:
        config: the timings.
        rng: chooses helpers and nonces (seeded in tests and simulations).
    """

    def __init__(self, config: DetectorConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.probes: dict[bytes, Probe] = {}
        self.probes_sent = 0  # probes started
        self.cleared = 0  # probes that ended with an alive answer (or the peer was heard)

    def start_probe(self, target: bytes, helpers: list[bytes],
                    now: float) -> list[tuple[bytes, ProbeReq]]:
        """Start probing ``target`` through up to ``probe_k`` of ``helpers`` (not already
        under way): the requests to send, each to its helper."""
        if target in self.probes:
            return []
        chosen = self.rng.sample(helpers, min(self.config.probe_k, len(helpers)))
        nonce = self.rng.getrandbits(62)
        self.probes[target] = Probe(target, nonce, now + self.config.probe_timeout,
                                    tuple(chosen))
        self.probes_sent += 1
        req = ProbeReq(target, nonce)
        return [(helper, req) for helper in chosen]

    def on_ack(self, ack: ProbeAck, helper: bytes) -> bool:
        """An answer from ``helper``; True if it clears its probe (the target is alive)."""
        probe = self.probes.get(ack.target)
        if probe is None or probe.nonce != ack.nonce or helper not in probe.helpers:
            return False
        if ack.alive:
            del self.probes[ack.target]
            self.cleared += 1
            return True
        return False

    def clear(self, target: bytes) -> None:
        """The target was heard from directly: its probe (if any) ends."""
        if self.probes.pop(target, None) is not None:
            self.cleared += 1

    def expired(self, now: float) -> list[bytes]:
        """The targets whose probe found no one who hears them (to suspect now)."""
        done = [t for t, p in self.probes.items() if p.deadline <= now]
        for target in done:
            del self.probes[target]
        return done

    def next_deadline(self) -> float | None:
        """When the next probe times out."""
        return min((p.deadline for p in self.probes.values()), default=None)

    def suspicion_timeout(self, members: int, confirmations: int) -> float:
        """How long a suspect has to refute, given how many members are in the mesh and
        how many besides the first suspected it too (Lifeguard): from ``suspicion_max``
        with none down to ``suspicion_min`` with ``probe_k`` or more."""
        cfg = self.config
        low = cfg.suspicion_min
        high = max(low, cfg.suspicion_mult * math.log10(members + 1) * cfg.ping_interval)
        k = max(1, cfg.probe_k)
        done = min(max(confirmations, 0), k)
        return max(low, high - (high - low) * math.log(done + 1) / math.log(k + 1))
