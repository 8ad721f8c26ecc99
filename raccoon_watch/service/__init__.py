"""The service around the pipeline: the commands (``cli``, ``detect_cmd``, ``retrain_cmd``), what
``check-config`` checks (``preflight``), sd_notify and SIGHUP (``notify``), the watchdog
(``liveness``), /healthz and the review page's server (``health``). The top of the import graph:
nothing below imports this package (logs and metrics live in ``support/``)."""
