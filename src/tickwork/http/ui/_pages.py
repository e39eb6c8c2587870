"""The UI's pages: dashboard, instances, one instance, schedules, one schedule, nodes."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from starlette.responses import JSONResponse, RedirectResponse, Response

from tickwork.errors import InvalidArgument, NotFound
from tickwork.http._counts import recent_missed
from tickwork.http.ui._data import counts, scheduler_of, take_sample
from tickwork.http.ui._view import csrf_token, templates, write_allowed
from tickwork.state import State

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams
    from starlette.requests import Request

    from tickwork.model import Instance
    from tickwork.node.scheduler import Scheduler

__all__ = ["dashboard", "instance", "instances", "nodes", "samples", "schedule", "schedules"]

PAGE = 50
FAILED_READ = 100
_TABS = {"history": False, "upcoming": True, "all": None}
_FLASH_KEYS = ("done", "error")
#: what a search names (see _look_up)
_Found = Literal["instance", "missing", "schedule", "task"]


def _now_us(request: Request) -> int:
    return int(scheduler_of(request).now().timestamp() * 1_000_000)


def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    flash = {k: request.query_params[k] for k in _FLASH_KEYS if k in request.query_params}
    base = {
        "now_us": _now_us(request),
        "can_write": write_allowed(request),
        "csrf_token": csrf_token(request),
        "flash": flash,
        "node_id": scheduler_of(request).node_id,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def _not_found(request: Request, what: str) -> Response:
    return _render(request, "not_found.html", status=404, what=what, active="")


async def dashboard(request: Request) -> Response:
    scheduler = scheduler_of(request)
    by_state = await counts(request)
    stats = scheduler.statistics()
    now = scheduler.now()
    running = await scheduler.list(state=State.RUNNING, limit=10)
    # Among the 100 newest failed instances (an index range, however many failed ever):
    # those that ended in the last hour. Filtering the store on the end time instead
    # would walk every failed instance ever stored when few failed lately.
    hour_ago = int((now - timedelta(hours=1)).timestamp() * 1_000_000)
    newest = await scheduler.list(state=State.FAILED, limit=FAILED_READ)
    failed = [i for i in newest if i.updated_us >= hour_ago]
    missed, missed_more = await recent_missed(scheduler, hour_ago)
    take_sample(request)
    return _render(
        request,
        "dashboard.html",
        active="dashboard",
        counts=[(s.name, by_state.get(s, 0)) for s in State],
        total=sum(by_state.values()),
        stats=stats,
        running=running,
        failed=failed[:8],
        failed_count=len(failed),
        failed_more=len(failed) >= FAILED_READ,
        missed=[(reason, n) for reason, n in missed.items() if n],
        missed_more=missed_more,
        nodes=await scheduler.nodes(),
    )


async def samples(request: Request) -> Response:
    """The dashboard chart's series (runs per second, lateness), as JSON."""
    return JSONResponse({"samples": take_sample(request)})


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _tab(q: QueryParams) -> str:
    """The tab asked for (``?upcoming=1``, an older link, is the upcoming one)."""
    if q.get("upcoming") == "1":
        return "upcoming"
    tab = q.get("tab", "history")
    return tab if tab in _TABS else "history"


def _state(q: QueryParams) -> State | None:
    name = q.get("state", "").upper()
    return State[name] if name in State.__members__ else None


async def _look_up(scheduler: Scheduler, search: str) -> tuple[_Found, str]:
    """What the search box names, and the note that says so: ``"instance"`` (an id that
    exists), ``"missing"`` (an id that does not), ``"schedule"`` (a schedule's id) or
    ``"task"`` (anything else)."""
    if search.isascii() and search.isdigit():
        try:
            await scheduler.get(int(search))
        except NotFound:
            return "missing", f"no instance with id {search}"
        return "instance", ""
    try:
        await scheduler.get_schedule(search)
    except (NotFound, InvalidArgument):
        return "task", f"showing task {search!r}"
    return "schedule", f"showing schedule {search!r}"


async def instances(request: Request) -> Response:
    scheduler = scheduler_of(request)
    q = request.query_params
    tab = _tab(q)
    state = _state(q)
    task = q.get("task", "").strip() or None
    schedule_id = q.get("schedule", "").strip() or None
    search = q.get("q", "").strip()
    note = None
    if search:
        found, note = await _look_up(scheduler, search)
        if found == "instance":
            return RedirectResponse(f"/instances/{int(search)}", status_code=303)
        # a name searched for replaces the filter of its kind
        task = search if found == "task" else task
        schedule_id = search if found == "schedule" else schedule_id
    before = _int_param(request, "before")
    try:
        page: list[Instance] = await scheduler.list(
            state=state,
            task=task,
            schedule_id=schedule_id,
            upcoming=_TABS[tab],
            before_id=before,
            limit=PAGE + 1,
        )
    except InvalidArgument as exc:
        page, note = [], str(exc)
    more = len(page) > PAGE
    page = page[:PAGE]
    filters = {
        "state": state.name if state else "",
        "task": task or "",
        "schedule": schedule_id or "",
    }
    return _render(
        request,
        "instances.html",
        active="instances",
        page=page,
        tab=tab,
        filters=filters,
        search=search,
        note=note,
        before=before,
        next_before=page[-1].id if more and page else None,
        states=[s.name for s in State],
    )


async def instance(request: Request) -> Response:
    scheduler = scheduler_of(request)
    iid = int(request.path_params["iid"])
    try:
        inst = await scheduler.get(iid)
    except NotFound:
        return _not_found(request, f"instance {iid}")
    history = await scheduler.history(iid)
    return _render(
        request,
        "instance.html",
        active="instances",
        inst=inst,
        history=list(reversed(history)),
        retryable=inst.state in {State.FAILED, State.ABORTED, State.MISSED},
        abortable=not inst.state.terminal,
    )


async def schedules(request: Request) -> Response:
    scheduler = scheduler_of(request)
    after = request.query_params.get("after") or None
    try:
        found = await scheduler.list_schedules(limit=PAGE + 1, after_id=after)
    except InvalidArgument:
        found = []
    more = len(found) > PAGE
    found = found[:PAGE]
    rows = []
    for sch in found:
        upcoming = await scheduler.next_fire_times(sch.id, 3) if not sch.ended else []
        recent = await scheduler.list(schedule_id=sch.id, upcoming=False, limit=10)
        rows.append({"schedule": sch, "next": upcoming, "recent": list(reversed(recent))})
    return _render(
        request,
        "schedules.html",
        active="schedules",
        rows=rows,
        next_after=found[-1].id if more and found else None,
    )


async def schedule(request: Request) -> Response:
    scheduler = scheduler_of(request)
    sid = request.path_params["sid"]
    try:
        sch = await scheduler.get_schedule(sid)
    except (NotFound, InvalidArgument):
        return _not_found(request, f"schedule {sid!r}")
    upcoming = await scheduler.next_fire_times(sid, 10) if not sch.ended else []
    recent = await scheduler.list(schedule_id=sid, upcoming=False, limit=25)
    ahead = await scheduler.list(schedule_id=sid, upcoming=True, limit=5)
    return _render(
        request,
        "schedule.html",
        active="schedules",
        schedule=sch,
        next=upcoming,
        recent=recent,
        ahead=ahead,
    )


async def nodes(request: Request) -> Response:
    scheduler = scheduler_of(request)
    return _render(
        request,
        "nodes.html",
        active="nodes",
        nodes=await scheduler.nodes(),
        stats=scheduler.statistics(),
        tasks=sorted(scheduler.tasks),
    )
