"""The service around the pipeline: commands (``cli``), sd_notify and SIGHUP (``notify``), the
watchdog (``liveness``), /healthz and the review page's server (``health``), /metrics (``metrics``)
and structured logs with secret redaction (``logs``). The pipeline stages never import this package
except ``logs`` (secret registration and clipping of untrusted text)."""
