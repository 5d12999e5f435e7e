"""The block device server and its backends (UNTRUSTED)."""
