"""The review page served by the daemon on ``http.port`` (beside /healthz and /metrics).

``pages.py`` is an ASGI app (Starlette requests and responses, served by uvicorn together with
/healthz and /metrics: ``raccoon_watch.service.health``) that routes requests and renders the Jinja2
templates in ``templates/``; ``auth.py`` decides who may see and change what; ``chart.py`` draws the
per-frame score chart as inline SVG. The page uses no JavaScript: server-rendered HTML, a
``<video>`` element for the clip and an MJPEG ``<img>`` for the live view, under a
Content-Security-Policy that allows only this origin's images, media and stylesheet.
"""
