"""Helpers every layer may use, importing nothing above ``config`` and ``types``.

- ``logs.py``: structured logs (structlog, JSON lines), secret redaction, ``clip`` for outside input;
- ``metrics.py``: the Prometheus registry behind /metrics;
- ``nativelog.py``: what C++ libraries (LiteRT, TensorFlow) print on stderr, routed into the log;
- ``backoff.py``: capped back-off; ``netdiag.py``: why a connection failed, in a few words (DNS,
  refused, timed out); ``imagefile.py``: image files read and decoded within limits.
"""
