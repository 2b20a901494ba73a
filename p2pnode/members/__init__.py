"""Membership (issue 18): who is in the mesh, with their tags and state.

``Membership`` (``service.py``) is the node's membership service; ``MemberInfo`` is
one member as the API, the CLI and event handlers see it.
"""

from .service import EVENT_KINDS, MemberInfo, Membership

__all__ = ["EVENT_KINDS", "MemberInfo", "Membership"]
