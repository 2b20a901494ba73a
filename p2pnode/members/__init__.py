"""Membership (issue 18): who is in the mesh, with their tags and state.

``Membership`` (``service.py``) is the node's membership service; ``MemberInfo`` is
one member as the API, the CLI and event handlers see it. ``records`` holds the
signed member records and claims, ``table`` merges them, ``detector`` times the
failure detector. Pure: no I/O, no trio (the glue is ``node.membership``).
"""

from .info import EVENT_KINDS, STATES, MemberInfo
from .service import MemberLimits, Membership

__all__ = ["EVENT_KINDS", "STATES", "MemberInfo", "MemberLimits", "Membership"]
