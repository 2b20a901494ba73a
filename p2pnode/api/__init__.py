"""The local API: JSON lines over a Unix domain socket (docs/api.md)."""
