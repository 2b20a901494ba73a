"""The mesh view: the link lists nodes share on the reserved topic ``$mesh``
(``linklist``), what a node knows of them (``view``), and drawings (``draw``). No trio,
no zeroconf. The names are loaded on first use: the drawings need neither msgspec nor,
until a PNG is drawn, matplotlib."""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .draw import names_of, render_png, to_dot
    from .linklist import (
        MESH_TOPIC,
        RESERVED_PREFIX,
        LinkList,
        decode_link_list,
        encode_link_list,
    )
    from .view import MeshNode, MeshView

__all__ = ["MESH_TOPIC", "RESERVED_PREFIX", "LinkList", "MeshNode", "MeshView",
           "decode_link_list", "encode_link_list", "names_of", "render_png", "to_dot"]
__getattr__ = _lazy(__name__, {
    "draw": ("names_of", "render_png", "to_dot"),
    "linklist": ("MESH_TOPIC", "RESERVED_PREFIX", "LinkList", "decode_link_list",
                 "encode_link_list"),
    "view": ("MeshNode", "MeshView"),
})
