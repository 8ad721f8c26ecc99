"""Capped exponential back-off, the one rule for every retry loop (camera reconnects, Pushover sends)."""

from __future__ import annotations

MAX_DOUBLINGS = 30  # 2**30 s is already decades: the exponent stops here so the float never overflows


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Capped exponential backoff: ``min(base * 2**attempt, cap)`` seconds (attempt from 0)."""
    return min(base * (2 ** min(attempt, MAX_DOUBLINGS)), cap)
