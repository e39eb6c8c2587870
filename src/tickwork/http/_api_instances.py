"""``/api/instances``: create one or a batch, get, list, abort, retry, history."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickwork.errors import InvalidArgument
from tickwork.http._body import check_keys, field, json_body, parse_time, query_int, query_time
from tickwork.http._errors import ApiError
from tickwork.http._json import attempt_doc, instance_doc
from tickwork.model import NewInstance
from tickwork.state import State

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.node.scheduler import Scheduler

__all__ = ["MAX_BATCH", "routes"]

#: The most instances one batch request may create.
MAX_BATCH: Final = 10_000
_FIELDS: Final = frozenset({"task", "at", "params", "dedup_key", "max_attempts", "timeout_seconds"})
_MAX_TIMEOUT: Final = 10 * 365 * 86400.0
_SIMPLE: Final = frozenset({"task", "at", "params"})


def scheduler_of(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


def instance_id(request: Request) -> int:
    iid: int = request.path_params["instance_id"]
    if not 1 <= iid < 2**63:
        raise ApiError(404, f"no instance with id {iid}")
    return iid


def new_instance(doc: object, tasks: Collection[str], what: str = "the body") -> NewInstance:
    """One instance to create, checked (422 with the field named otherwise)."""
    simple = _simple(doc, tasks)
    if simple is not None:
        return simple
    d = check_keys(doc, _FIELDS, what)
    task = field(d, "task", str, required=True)
    if task not in tasks:
        known = ", ".join(sorted(tasks)) or "none"
        raise ApiError(422, f"unknown task {task!r}; this node knows: {known}", "unknown_task")
    at = parse_time(field(d, "at", str, required=True), "at")
    max_attempts = field(d, "max_attempts", int)
    if max_attempts is not None and not 1 <= max_attempts <= 1_000_000:
        raise ApiError(422, f"max_attempts must be in 1..1000000, got {max_attempts}")
    timeout = field(d, "timeout_seconds", (int, float))
    if timeout is not None and not 0 < timeout <= _MAX_TIMEOUT:
        raise ApiError(422, f"timeout_seconds must be > 0 and at most ten years, got {timeout}")
    dedup = field(d, "dedup_key", str)
    if dedup is not None and not 1 <= len(dedup) <= 1000:
        raise ApiError(422, "dedup_key must be 1..1000 characters")
    return NewInstance(
        task,
        at,
        d.get("params", b"") if d.get("params") is not None else b"",
        dedup_key=dedup,
        max_attempts=max_attempts,
        timeout=None if timeout is None else timedelta(seconds=timeout),
    )


def _simple(doc: object, tasks: Collection[str]) -> NewInstance | None:
    """The common item (task, at, params) when it is plainly valid, without the per-field
    checks; None sends it the long way, which names what is wrong. (A batch of 10,000
    costs a third less this way.)"""
    if type(doc) is not dict or not doc.keys() <= _SIMPLE:
        return None
    task, at = doc.get("task"), doc.get("at")
    if type(task) is not str or type(at) is not str or task not in tasks:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    params = doc.get("params")
    return NewInstance(task, when, b"" if params is None else params)


async def create(request: Request) -> Response:
    scheduler = scheduler_of(request)
    new = new_instance(await json_body(request), frozenset(scheduler.tasks))
    (iid,) = await scheduler.schedule_many([new])
    return JSONResponse(instance_doc(await scheduler.get(iid)), status_code=201)


async def create_batch(request: Request) -> Response:
    doc = check_keys(await json_body(request), frozenset({"instances"}), "the body")
    items = field(doc, "instances", list, required=True)
    if not 1 <= len(items) <= MAX_BATCH:
        raise ApiError(422, f"instances must hold 1..{MAX_BATCH} items, got {len(items)}")
    news: list[NewInstance] = []
    tasks = frozenset(scheduler_of(request).tasks)
    for k, item in enumerate(items):
        try:
            news.append(new_instance(item, tasks, f"instances[{k}]"))
        except ApiError as exc:
            raise ApiError(exc.status, f"instances[{k}]: {exc.message}", exc.code) from None
    try:
        ids = await scheduler_of(request).schedule_many(news)
    except InvalidArgument as exc:
        raise ApiError(422, str(exc)) from None
    return JSONResponse({"ids": ids}, status_code=201)


def _state(request: Request) -> State | None:
    value = request.query_params.get("state")
    if value is None:
        return None
    try:
        return State[value.upper()]
    except KeyError:
        names = ", ".join(s.name for s in State)
        raise ApiError(400, f"state must be one of {names}, got {value!r}") from None


async def list_instances(request: Request) -> Response:
    q = request.query_params
    unknown = sorted(set(q) - _LIST_PARAMS)
    if unknown:
        raise ApiError(400, f"unknown query parameters: {', '.join(unknown)}")
    limit = query_int(request, "limit", 100, 1, 1000)
    assert limit is not None  # noqa: S101 - it has a default
    items = await scheduler_of(request).list(
        state=_state(request),
        task=q.get("task"),
        schedule_id=q.get("schedule_id"),
        due_after=query_time(request, "due_after"),
        due_before=query_time(request, "due_before"),
        ended_after=query_time(request, "ended_after"),
        ended_before=query_time(request, "ended_before"),
        limit=limit,
        before_id=query_int(request, "before_id", None, 1, 2**63 - 1),
        upcoming=_upcoming(request),
    )
    return JSONResponse(
        {
            "items": [instance_doc(i) for i in items],
            "next_before_id": items[-1].id if len(items) == limit else None,
        }
    )


def _upcoming(request: Request) -> bool | None:
    value = request.query_params.get("upcoming")
    if value is None:
        return None
    if value not in {"true", "false"}:
        raise ApiError(400, f"upcoming must be true or false, got {value!r}")
    return value == "true"


_LIST_PARAMS: Final = frozenset(
    {
        "upcoming",
        "state",
        "task",
        "schedule_id",
        "due_after",
        "due_before",
        "ended_after",
        "ended_before",
        "limit",
        "before_id",
    }
)


async def get_instance(request: Request) -> Response:
    return JSONResponse(instance_doc(await scheduler_of(request).get(instance_id(request))))


async def history(request: Request) -> Response:
    scheduler = scheduler_of(request)
    iid = instance_id(request)
    await scheduler.get(iid)  # 404 for an unknown id
    return JSONResponse({"items": [attempt_doc(a) for a in await scheduler.history(iid)]})


async def abort(request: Request) -> Response:
    iid = instance_id(request)
    state = await scheduler_of(request).abort(iid)
    return JSONResponse({"id": iid, "state": state.name})


async def retry(request: Request) -> Response:
    iid = instance_id(request)
    scheduler = scheduler_of(request)
    new_id = await scheduler.retry(iid)
    return JSONResponse(instance_doc(await scheduler.get(new_id)), status_code=201)


def routes() -> list[Any]:
    return [
        Route("/api/instances", list_instances, methods=["GET"]),
        Route("/api/instances", create, methods=["POST"]),
        Route("/api/instances/batch", create_batch, methods=["POST"]),
        Route("/api/instances/{instance_id:int}", get_instance, methods=["GET"]),
        Route("/api/instances/{instance_id:int}/history", history, methods=["GET"]),
        Route("/api/instances/{instance_id:int}/abort", abort, methods=["POST"]),
        Route("/api/instances/{instance_id:int}/retry", retry, methods=["POST"]),
    ]
