"""What the UI's buttons post: abort and retry an instance; pause, resume, run now and
remove a schedule. Each calls the public Scheduler API and redirects back (303) with a
one-line message; the app's middleware has checked the CSRF token and the scope."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from tickwork.errors import TickworkError
from tickwork.http.ui._data import scheduler_of

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["instance_action", "schedule_action"]


def _back(path: str, *, done: str | None = None, error: str | None = None) -> Response:
    query = urlencode({k: v for k, v in (("done", done), ("error", error)) if v})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


async def instance_action(request: Request) -> Response:
    scheduler = scheduler_of(request)
    iid = int(request.path_params["iid"])
    action = request.path_params["action"]
    here = f"/instances/{iid}"
    try:
        if action == "abort":
            state = await scheduler.abort(iid)
            return _back(here, done=f"Abort of instance {iid}: {state.name}")
        if action == "retry":
            new_id = await scheduler.retry(iid)
            return _back(f"/instances/{new_id}", done=f"Retrying instance {iid} as {new_id}")
    except TickworkError as exc:
        return _back(here, error=str(exc))
    return Response("unknown action", status_code=404)


async def schedule_action(request: Request) -> Response:
    scheduler = scheduler_of(request)
    sid = request.path_params["sid"]
    action = request.path_params["action"]
    here = f"/schedules/{sid}"
    try:
        if action == "pause":
            await scheduler.pause_schedule(sid)
            return _back(here, done=f"Paused {sid}")
        if action == "resume":
            await scheduler.resume_schedule(sid)
            return _back(here, done=f"Resumed {sid}")
        if action == "run-now":
            iid = await scheduler.run_schedule_now(sid)
            return _back(here, done=f"Running {sid} now as instance {iid}")
        if action == "remove":
            await scheduler.remove_schedule(sid)
            return _back("/schedules", done=f"Removed {sid}")
    except TickworkError as exc:
        return _back(here, error=str(exc))
    return Response("unknown action", status_code=404)
