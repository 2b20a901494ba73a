"""The node's membership service: the member list (this node included), tags, and
member events to listeners. No I/O, no trio: the node feeds it and asks it (the
clock is the caller's).

This first version knows only this node; the records, their gossip and the failure
detector come next (docs/protocol.md). Its interface is what the API, the CLI and
the event handlers use, and stays:

- ``members()``: every member known, this node included;
- ``set_tags(set_, delete)``: change this node's tags at run time;
- ``add_listener(fn)``: ``fn(kind, member)`` on each member event (``EVENT_KINDS``);
  returns a function that removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
    since: float = 0.0  # trio time of the last change of state
    this_node: bool = False

    def to_dict(self, now: float) -> dict[str, Any]:
        """The member for the API's ``members`` reply and member events."""
        return {"node_id": id_to_hex(self.node_id), "name": self.name, "state": self.state,
                "tags": dict(self.tags), "addrs": list(self.addrs),
                "incarnation": self.incarnation, "version": self.version,
                "network": self.network, "since_s": round(max(0.0, now - self.since), 3),
                "self": self.this_node}


class Membership:
    """The member list of one node.

    Args:
        me: this node's own record (``this_node`` True).
    """

    def __init__(self, me: MemberInfo) -> None:
        self.me = me
        self._listeners: list[Listener] = []

    def members(self) -> list[MemberInfo]:
        """Every member known, this node included."""
        return [self.me]

    def set_tags(self, set_: Mapping[str, str], delete: Iterable[str] = ()) -> None:
        """Set and delete tags of this node (validated by the caller)."""
        tags = dict(self.me.tags)
        for key in delete:
            tags.pop(key, None)
        tags.update(set_)
        self.me.tags = tags
        self.me.incarnation += 1
        self.emit("member_update", self.me)

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call ``fn(kind, member)`` on every member event; returns its remover."""
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)
        return remove

    def emit(self, kind: str, member: MemberInfo) -> None:
        """Tell every listener (a listener's error is its own: not raised here)."""
        for fn in list(self._listeners):
            fn(kind, member)
