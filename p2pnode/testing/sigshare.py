"""For simulations (``scripts/simulate.py``): every simulated node shares one CPU, so a
signature that many nodes check is checked once per process (every node of a real mesh
checks it on its own CPU).

At scale the checks were a third of a run's time (profiled: 200 nodes, interest mode,
where every node checks every other's link lists), and each of N nodes checking each of
N member records is N² checks (1,000 nodes: a million, about two CPU minutes). What a
node does with a record or batch is unchanged: only the repeated check of the same
signature over the same bytes is skipped. A signature that fails is checked again each
time.
"""

from __future__ import annotations

from collections.abc import Callable

from ..gossip.signing import Verifier
from ..members import records


def share_signature_checks() -> Callable[[], None]:
    """Check each distinct signature (of a batch, a member record or a claim) once per
    process. Returns the function that undoes it."""
    inner = Verifier.check_signed
    good: dict[bytes, tuple[bytes, bytes, bytes]] = {}

    def check_signed(self: Verifier, key: bytes, signer: bytes, data: bytes,
                     sig: bytes) -> None:
        if good.get(sig) == (key, signer, data):
            return
        inner(self, key, signer, data, sig)
        good[sig] = (key, signer, data)

    inner_member = records.check_signature
    good_member: dict[bytes, tuple[bytes, bytes, bytes]] = {}

    def check_signature(key: bytes, domain: bytes, data: bytes, sig: bytes) -> None:
        if good_member.get(sig) == (key, domain, data):
            return
        inner_member(key, domain, data, sig)
        good_member[sig] = (key, domain, data)

    Verifier.check_signed = check_signed  # type: ignore[method-assign]
    records.check_signature = check_signature

    def undo() -> None:
        Verifier.check_signed = inner  # type: ignore[method-assign]
        records.check_signature = inner_member

    return undo
