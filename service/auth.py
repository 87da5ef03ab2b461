"""The bearer-token check shared by the gRPC edge, the HTTP API and /metrics (one rule)."""

from __future__ import annotations

import hmac


def expected_token(token: str | None) -> bytes | None:
    """What :func:`bearer_matches` compares against (None: no token configured, auth off)."""
    return token.encode() if token else None


def bearer_matches(value: bytes | str, token: bytes) -> bool:
    """``value`` is ``Bearer <token>``: the scheme case-insensitive (RFC 7235), exactly one space,
    the token compared in constant time."""
    raw = value if isinstance(value, bytes) else value.encode()
    scheme, sep, given = raw.partition(b" ")
    ok_scheme = sep == b" " and scheme.lower() == b"bearer"
    return hmac.compare_digest(given if ok_scheme else b"", token) and ok_scheme
