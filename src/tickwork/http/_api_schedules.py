"""``/api/schedules``: create, replace, pause, resume, remove, run now, next fire times,
recent runs; each schedule's rule in plain English; a schedule's own ``notify``."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickwork.errors import InvalidArgument, NotFound
from tickwork.http._api_instances import scheduler_of
from tickwork.http._body import check_keys, field, json_body, parse_time, query_int
from tickwork.http._errors import ApiError
from tickwork.http._json import instance_doc, iso, schedule_doc
from tickwork.notify import Notify
from tickwork.schedules.schedule import check_schedule_id
from tickwork.schedules.triggers import Cron, Interval

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["routes"]

_FIELDS: Final = frozenset(
    {
        "id",
        "task",
        "cron",
        "every_seconds",
        "params",
        "start_at",
        "end_at",
        "jitter_seconds",
        "misfire",
        "grace_seconds",
        "catchup_limit",
        "overlap",
        "paused",
        "notify",
    }
)
#: ``tickwork.Notify``'s fields, its durations in seconds as everywhere in the API
_NOTIFY_FIELDS: Final = frozenset(
    {"url", "on", "overdue_after_seconds", "min_interval_seconds", "timeout_seconds"}
)
_MAX_SECONDS: Final = 100 * 365 * 86400.0


def _seconds(d: dict[str, Any], name: str, *, positive: bool = False) -> timedelta | None:
    value = field(d, name, (int, float))
    if value is None:
        return None
    low_ok = value > 0 if positive else value >= 0
    if not low_ok or value > _MAX_SECONDS:
        bound = "> 0" if positive else ">= 0"
        raise ApiError(422, f"{name} must be {bound} and at most 100 years, got {value}")
    return timedelta(seconds=value)


def _trigger(d: dict[str, Any]) -> Cron | Interval:
    cron = field(d, "cron", dict)
    every = _seconds(d, "every_seconds", positive=True)
    if (cron is None) == (every is None):
        raise ApiError(422, "give exactly one of cron ({expr, timezone}) and every_seconds")
    if every is not None:
        return Interval(every)
    c = check_keys(cron, frozenset({"expr", "timezone"}), "cron")
    expr = field(c, "expr", str, required=True)
    zone = field(c, "timezone", str) or "UTC"
    return Cron(expr, zone)


def _notify(d: dict[str, Any]) -> Notify | None:
    """The body's ``notify`` object as a :class:`Notify` (422 naming the field otherwise)."""
    doc = field(d, "notify", dict)
    if doc is None:
        return None
    try:
        return Notify(**_notify_args(check_keys(doc, _NOTIFY_FIELDS, "notify")))
    except ApiError as exc:
        raise ApiError(exc.status, f"notify: {exc.message}") from None
    except InvalidArgument as exc:  # Notify's own checks (url, on, durations)
        raise ApiError(422, f"notify: {exc}") from None


def _notify_args(n: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"url": field(n, "url", str, required=True)}
    on = field(n, "on", list)
    if on is not None:
        args["on"] = on
    args["overdue_after"] = _seconds(n, "overdue_after_seconds", positive=True)
    interval = _seconds(n, "min_interval_seconds", positive=True)
    if interval is not None:
        args["min_interval"] = interval
    timeout = _seconds(n, "timeout_seconds", positive=True)
    if timeout is not None:
        # a positive timeout shorter than a microsecond reads as 0: refuse it by its name here
        if not timeout:
            got = n["timeout_seconds"]
            raise ApiError(422, f"timeout_seconds must be at least 1e-06, got {got}")
        args["timeout"] = timeout.total_seconds()
    return args


def _definition(doc: object, schedule_id: str | None) -> dict[str, Any]:
    """``add_schedule``'s arguments from a body (422 naming the field otherwise)."""
    d = check_keys(doc, _FIELDS, "the body")
    body_id = field(d, "id", str)
    if schedule_id is not None and body_id is not None and body_id != schedule_id:
        raise ApiError(422, f"the body's id {body_id!r} is not the path's {schedule_id!r}")
    args: dict[str, Any] = {
        "task": field(d, "task", str, required=True),
        "trigger": _trigger(d),
        "params": d["params"] if d.get("params") is not None else b"",
        "schedule_id": schedule_id or body_id,
        "paused": bool(field(d, "paused", bool)),
        "notify": _notify(d),
    }
    for name in ("start_at", "end_at"):
        value = field(d, name, str)
        if value is not None:
            args[name] = parse_time(value, name)
    for name, arg in (("jitter_seconds", "jitter"), ("grace_seconds", "grace")):
        value = _seconds(d, name)
        if value is not None:
            args[arg] = value
    for name in ("misfire", "overlap"):
        value = field(d, name, str)
        if value is not None:
            args[name] = value
    limit = field(d, "catchup_limit", int)
    if limit is not None:
        args["catchup_limit"] = limit
    return args


def _schedule_id(request: Request) -> str:
    sid: str = request.path_params["schedule_id"]
    try:
        return check_schedule_id(sid)
    except InvalidArgument:
        raise ApiError(404, f"no schedule with id {sid!r}") from None


async def _store_one(request: Request, args: dict[str, Any], *, replace: bool) -> Response:
    scheduler = scheduler_of(request)
    existed = False
    if args["schedule_id"] is not None:
        check_schedule_id(args["schedule_id"])
        existed = await _exists(request, args["schedule_id"])
    try:
        sid = await scheduler.add_schedule(**args, replace=replace)
    except InvalidArgument as exc:
        if existed and not replace:
            raise ApiError(409, str(exc)) from None
        raise
    doc = schedule_doc(await scheduler.get_schedule(sid))
    return JSONResponse(doc, status_code=200 if existed else 201)


async def _exists(request: Request, sid: str) -> bool:
    try:
        await scheduler_of(request).get_schedule(sid)
    except NotFound:
        return False
    return True


async def create(request: Request) -> Response:
    return await _store_one(request, _definition(await json_body(request), None), replace=False)


async def replace(request: Request) -> Response:
    sid = _schedule_id(request)
    return await _store_one(request, _definition(await json_body(request), sid), replace=True)


async def list_schedules(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    assert limit is not None  # noqa: S101 - it has a default
    after = request.query_params.get("after_id")
    items = await scheduler_of(request).list_schedules(limit=limit, after_id=after)
    return JSONResponse(
        {
            "items": [schedule_doc(s) for s in items],
            "next_after_id": items[-1].id if len(items) == limit else None,
        }
    )


async def get_schedule(request: Request) -> Response:
    return JSONResponse(
        schedule_doc(await scheduler_of(request).get_schedule(_schedule_id(request)))
    )


async def pause(request: Request) -> Response:
    return JSONResponse(
        schedule_doc(await scheduler_of(request).pause_schedule(_schedule_id(request)))
    )


async def resume(request: Request) -> Response:
    return JSONResponse(
        schedule_doc(await scheduler_of(request).resume_schedule(_schedule_id(request)))
    )


async def remove(request: Request) -> Response:
    await scheduler_of(request).remove_schedule(_schedule_id(request))
    return Response(status_code=204)


async def run_now(request: Request) -> Response:
    scheduler = scheduler_of(request)
    iid = await scheduler.run_schedule_now(_schedule_id(request))
    return JSONResponse(instance_doc(await scheduler.get(iid)), status_code=201)


async def next_fires(request: Request) -> Response:
    n = query_int(request, "n", 5, 1, 1000)
    assert n is not None  # noqa: S101 - it has a default
    times = await scheduler_of(request).next_fire_times(_schedule_id(request), n)
    return JSONResponse({"times": [iso(t) for t in times]})


async def runs(request: Request) -> Response:
    limit = query_int(request, "limit", 20, 1, 1000)
    assert limit is not None  # noqa: S101 - it has a default
    scheduler = scheduler_of(request)
    sid = _schedule_id(request)
    await scheduler.get_schedule(sid)  # 404 for an unknown id
    items = await scheduler.list(
        schedule_id=sid,
        limit=limit,
        before_id=query_int(request, "before_id", None, 1, 2**63 - 1),
    )
    return JSONResponse(
        {
            "items": [instance_doc(i) for i in items],
            "next_before_id": items[-1].id if len(items) == limit else None,
        }
    )


def routes() -> list[Any]:
    one = "/api/schedules/{schedule_id}"
    return [
        Route("/api/schedules", list_schedules, methods=["GET"]),
        Route("/api/schedules", create, methods=["POST"]),
        Route(one, get_schedule, methods=["GET"]),
        Route(one, replace, methods=["PUT"]),
        Route(one, remove, methods=["DELETE"]),
        Route(one + "/pause", pause, methods=["POST"]),
        Route(one + "/resume", resume, methods=["POST"]),
        Route(one + "/run-now", run_now, methods=["POST"]),
        Route(one + "/next", next_fires, methods=["GET"]),
        Route(one + "/runs", runs, methods=["GET"]),
    ]
