"""The web UI: server-rendered pages (Jinja2) over the public :class:`tickwork.Scheduler`
API, with a little JavaScript shipped in the package (no build step) for live updates and
the dashboard's chart.

:func:`ui_routes` gives the pages, the forms they post to and the static files;
``tickwork.http.create_app`` mounts them. The app's state must hold the scheduler
(``app.state.scheduler``). Sign-in, CSRF checks and scopes are the app's middleware: it
sets ``request.state.auth_scope`` (``"read"`` hides the buttons that change anything)
and ``request.state.csrf_token`` (every form carries it).

Every page is bounded whatever the number of stored instances: lists are keyset pages of
the store's own order (newest first), counts come from the store's counters (cached), and
nothing loads or counts every row.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tickwork.http.ui import _actions, _pages

__all__ = ["ui_routes"]

_STATIC = Path(__file__).parent / "static"


def ui_routes() -> list[BaseRoute]:
    """The UI's pages (``/``, ``/instances``, ``/schedules``, ``/nodes`` and their detail
    pages), the forms' actions, the dashboard's samples and ``/static``."""
    return [
        Route("/", _pages.dashboard, methods=["GET"], name="ui-dashboard"),
        Route("/instances", _pages.instances, methods=["GET"], name="ui-instances"),
        Route("/instances/{iid:int}", _pages.instance, methods=["GET"], name="ui-instance"),
        Route("/schedules", _pages.schedules, methods=["GET"], name="ui-schedules"),
        Route("/schedules/{sid}", _pages.schedule, methods=["GET"], name="ui-schedule"),
        Route("/nodes", _pages.nodes, methods=["GET"], name="ui-nodes"),
        Route("/ui/samples", _pages.samples, methods=["GET"], name="ui-samples"),
        Route("/instances/{iid:int}/{action}", _actions.instance_action, methods=["POST"]),
        Route("/schedules/{sid}/{action}", _actions.schedule_action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_STATIC), name="static"),
    ]
