"""Topic levels and wildcard patterns, as the API's names (``p2pnode.api.PatternIndex``
and the others): the code is ``wire.topics``, in the pure layer that the member records
(which carry subscription patterns) can import too."""

from ..wire.topics import *  # noqa: F403
from ..wire.topics import __all__ as __all__
