"""A private, empty /tmp for a test's commands, in a mount namespace of their own, that
still shows the checkout and the Python environment where they live under /tmp (a CI
clone may)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def under_tmp() -> list[str]:
    """The checkout and the Python environment, where they live under /tmp."""
    dirs = sorted({str(Path(d).resolve()) for d in (ROOT, sys.prefix)})
    inside = [d for d in dirs if d.startswith("/tmp/")]
    return [d for d in inside if not any(d.startswith(o + "/") for o in inside if o != d)]


def private_tmp_mounts(size: str = "32m") -> str:
    """Shell commands (run as root, inside ``unshare --mount --propagation private``)
    that put an empty tmpfs on /tmp and bind the checkout and environment back in
    place. The old /tmp stays reachable only through /mnt/oldtmp, a tmpfs of this
    namespace's too: nothing is created outside it."""
    keep = "".join(f' && mkdir -p {d} && mount --bind /mnt/oldtmp/{d[len("/tmp/"):]} {d}'
                   for d in under_tmp())
    return ("mount -t tmpfs -o size=1m p2pt-keep /mnt && mkdir /mnt/oldtmp"
            " && mount --bind /tmp /mnt/oldtmp"
            f" && mount -t tmpfs -o mode=1777,size={size} p2pt /tmp{keep}")
