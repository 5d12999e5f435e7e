"""The external pager and its replacement policies (UNTRUSTED)."""
