"""A local app's ``publish`` request, checked and handed to the node (the API's hot
path): the topic, the payload, a direct message's target, a retained message's room."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import (
    ApiError,
    Publish,
    check_retain,
    check_topic,
    publish_payload,
    publish_target,
)

if TYPE_CHECKING:
    from .server import ApiBackend


def take_publish(req: Publish, backend: ApiBackend, max_payload: int) -> tuple[str, int]:
    """Check ``req`` and publish it (its batch is signed when the caller flushes).
    Returns (msg id hex, number of peers it goes to). Raises ``ApiError``: bad_request,
    too_large, retained_full, unknown_node (a ``to`` that no node here knows)."""
    topic = check_topic(req.topic, req.id)
    payload = publish_payload(req, max_payload)
    target = publish_target(req) if req.to is not None else None
    if req.retain:
        check_retain(req, topic, len(payload), backend.retained_refusal)
    if target is not None and not backend.knows_node(target):
        raise ApiError("unknown_node", f"no node {target.hex()} is known here: it is not "
                       "this node, not linked to it and not in its mesh view (p2pnode mesh "
                       "lists them); nothing was sent", req.id)
    return backend.publish(topic, payload, target, defer_flush=True, retain=req.retain)
