"""System servers: crypt (TRUSTED), pager and blockdev (UNTRUSTED)."""
