"""p2pnode: a peer-to-peer messaging node for local networks."""

__version__ = "0.1.0"

#: Version of the node-to-node wire protocol. Nodes refuse peers of another version.
PROTOCOL_VERSION = 4
