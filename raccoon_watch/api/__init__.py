"""The recognizer as a DeepStack/CodeProject.AI-compatible HTTP API, and its client.

- ``protocol``: the wire format both sides speak (pure: predictions in, JSON out, and back);
- ``server``: ``raccoon-watch serve``'s ASGI app (Starlette requests on uvicorn, the models in a
  bounded pool of inference threads);
- ``serve_cmd``: the command line;
- the daemon's client is ``raccoon_watch.recognition.detectors.remote`` (``detector.backend: remote``).
"""
