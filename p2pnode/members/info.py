"""A member as apps see it (``MemberInfo``), the member events and the member states.

``service`` re-exports these names: they are the interface the API, the CLI and the
event handlers use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..ids import id_to_hex

#: The member events, in the order of a member's life.
EVENT_KINDS: Final = ("member_join", "member_update", "member_suspect", "member_dead",
                      "member_left")
#: A member's states.
STATES: Final = ("alive", "suspect", "dead", "left")

Listener = Callable[[str, "MemberInfo"], None]


@dataclass
class MemberInfo:
    """One member, as apps see it."""

    node_id: bytes
    name: str
    addrs: list[str]
    version: int
    network: str
    tags: dict[str, str] = field(default_factory=dict)
    incarnation: int = 0
    state: str = "alive"
    since: float = 0.0  # the caller's (trio) time of the last change of state
    this_node: bool = False
    #: The topic names and patterns it subscribes to (None: every topic).
    interests: list[str] | None = None

    def to_dict(self, now: float) -> dict[str, Any]:
        """The member for the API's ``members`` reply and member events."""
        return {"node_id": id_to_hex(self.node_id), "name": self.name, "state": self.state,
                "tags": dict(self.tags), "addrs": list(self.addrs),
                "incarnation": self.incarnation, "version": self.version,
                "network": self.network, "since_s": round(max(0.0, now - self.since), 3),
                "self": self.this_node,
                "interests": "all" if self.interests is None else list(self.interests)}
