"""Finding peers: mDNS on the local network (``mdns``); static peers come from the config."""
