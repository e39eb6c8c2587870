"""The HTTP side of a node: JSON API, server-sent events, Prometheus metrics, sign-in and
the web UI, as one ASGI app (Starlette on hypercorn's trio worker), built only on the
public :class:`tickwork.Scheduler` API. See ``docs/http.md``.

Needs the ``tickwork[http]`` dependencies (installed with tickwork by default).
"""

from __future__ import annotations

from tickwork.http._app import create_app as create_app
from tickwork.http._serve import serve as serve

__all__ = ["create_app", "serve"]
