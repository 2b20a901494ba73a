"""The error tree. Every error says whose fault it is (see docs/architecture.md).

- ``LocalError``: misuse of our own API or configuration (our fault).
- ``RemoteProtocolError``: a peer or a local client broke the protocol (their fault).
  It carries a short machine-readable ``code`` and a human ``message``.

trio's own meaning is kept: ``trio.ClosedResourceError`` means we closed it,
``trio.BrokenResourceError`` means the other side broke it. Anything else is a bug.
"""

from __future__ import annotations

__all__ = ["ConfigError", "LocalError", "P2PError", "RemoteProtocolError", "SocketInUse",
           "UnsafePath", "UntrustedServer", "single_error"]


def single_error(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio nurseries),
    or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class P2PError(Exception):
    """Base class of every error p2pnode raises on purpose."""


class LocalError(P2PError):
    """Our side was misused: a bad argument, an impossible configuration."""


class ConfigError(LocalError):
    """A configuration value (flag, environment, file) is invalid."""

    #: The setting at fault (its configuration file key), when known.
    key: str | None = None


class UnsafePath(ConfigError):
    """A directory or file that another local user could control: the socket's
    private directory, the data directory, a key file. Refused before it is used;
    the message names the path, what is wrong and what to do."""


class RemoteProtocolError(P2PError):
    """The other side (a peer or a local client) broke the protocol.

    ``code`` is a short stable identifier (``"too_large"``, ``"bad_frame"``, ...)
    that is safe to show to the other side; ``message`` explains it to a human.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SocketInUse(LocalError):
    """Another live node already serves the local API socket path."""


class UntrustedServer(P2PError):
    """The process serving the local API socket runs as a user this client does not
    trust (not the client's own user, not root, not the allowed ``server_user``).

    Nothing was sent to it. ``path`` is the socket, ``uid`` the server's user id.
    """

    def __init__(self, path: str, uid: int, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.uid = uid
