"""trio adapters for the node's network side: transports, links, the connection manager."""
