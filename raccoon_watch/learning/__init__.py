"""Learning from the site's feedback: verdicts in, a better classifier out, never a worse one.

- ``feedback.py``: a feedback folder read with every bad row named, the split by night and whole
  event; ``export_feedback.py``: the review page's verdicts written as train/ CSV;
- ``replay.py``: a held-out visit judged the way the daemon judged it live; ``promotion.py``: the
  promotion gate (pure): a candidate is promoted only when it makes the site better and the
  standard set no worse (the motion gate is another thing, in ``motion.py``);
- ``retrain_options.py``: the retrain's modes and defaults (a leaf module train/ imports too);
  ``retrain_priority.py``: the retrain runs at a low CPU and I/O priority beside the daemon;
- ``site_models.py``: candidates and the ``current``/``previous`` links; ``hotswap.py``: a new
  classifier loaded in the background and taken between frames on SIGHUP.
"""
