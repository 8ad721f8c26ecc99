"""The service around the pipeline: the commands (``cli``, ``detect_cmd``, ``retrain_cmd``), what
``check-config`` checks (``preflight``), sd_notify and SIGHUP (``notify``), the watchdog
(``liveness``), /healthz and the review page's server (``health``). Near the top of the import
graph: logs and metrics live in ``support/``; only ``archive/`` (the detect command over a folder)
and the page's "Retrain now" (``web/retrain_job``) reuse helpers of the detect and retrain commands."""
