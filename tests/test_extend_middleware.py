"""Run middleware (tickwork.RunMiddleware): order, context, and how its errors are recorded."""

from __future__ import annotations

import contextvars
from datetime import timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork.testing import VirtualClock

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture
async def clock() -> VirtualClock:
    return VirtualClock()


async def _run_one(
    clock: VirtualClock, task: tickwork.Task, middleware: list[Any], **kwargs: Any
) -> tickwork.Instance:
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, middleware=middleware, node_id="n1"
    ) as sched:
        iid = await sched.schedule(task.name, at=clock.now() + timedelta(seconds=1), **kwargs)
        await settle(sched)
        return await sched.get(iid)


async def test_middleware_wraps_each_run_first_outermost(autojump_clock, clock):
    seen: list[str] = []
    task = Recording(clock)

    def named(name: str) -> tickwork.RunMiddleware:
        async def middleware(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
            assert run.task is task
            assert run.node_id == "n1"
            assert run.started_us == clock.now_us()
            seen.append(f"{name}>{run.instance.id}")
            result = await call_next()
            seen.append(f"<{name}")
            return result

        return middleware

    inst = await _run_one(clock, task, [named("a"), named("b")])
    assert inst.state is State.SUCCEEDED
    assert seen == [f"a>{inst.id}", f"b>{inst.id}", "<b", "<a"]
    assert len(task.runs) == 1


async def test_context_variable_set_by_middleware_is_seen_by_the_task(autojump_clock, clock):
    seen: list[tuple[str, int]] = []

    class Reads(tickwork.Task):
        name = "reads"

        async def run(self, params: bytes) -> object:
            seen.append((VAR.get(), tickwork.current_instance().id))
            return None

    async def set_var(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        token = VAR.set(f"trace-{run.instance.id}")
        try:
            return await call_next()
        finally:
            VAR.reset(token)

    inst = await _run_one(clock, Reads(), [set_var])
    assert seen == [(f"trace-{inst.id}", inst.id)]
    assert VAR.get() == "unset"


async def test_result_returned_by_middleware_is_the_result(autojump_clock, clock):
    results: list[object] = []

    class Hooked(Recording):
        async def on_success(self, instance: tickwork.Instance, result: Any) -> None:
            results.append(result)

    async def wrap(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        return {"wrapped": await call_next()}

    inst = await _run_one(clock, Hooked(clock), [wrap])
    assert inst.state is State.SUCCEEDED
    assert results == [{"wrapped": {"ok": True}}]


async def test_task_error_passes_through_middleware_as_itself(autojump_clock, clock):
    task = Recording(clock)
    task.fail = ValueError("task broke")
    seen: list[BaseException] = []

    async def observe(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        try:
            return await call_next()
        except Exception as exc:
            seen.append(exc)
            raise

    inst = await _run_one(clock, task, [observe, observe])
    assert inst.state is State.FAILED
    assert inst.error == "ValueError: task broke"
    assert seen == [task.fail, task.fail]


async def test_middleware_error_before_the_run_fails_it_naming_the_middleware(
    autojump_clock, clock
):
    task = Recording(clock)
    errors: list[BaseException] = []

    class Hooked(Recording):
        async def on_fail(self, instance: tickwork.Instance, error: BaseException) -> None:
            errors.append(error)

    task = Hooked(clock)

    async def broken_tracer(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        raise RuntimeError("collector unreachable")

    inst = await _run_one(clock, task, [broken_tracer])
    assert inst.state is State.FAILED
    assert inst.error == (
        "MiddlewareFailed: run middleware broken_tracer failed: RuntimeError: collector unreachable"
    )
    assert task.runs == []  # the task never ran
    [error] = errors
    assert isinstance(error, tickwork.MiddlewareFailed)
    assert isinstance(error.__cause__, RuntimeError)


async def test_middleware_error_after_a_successful_run_fails_it(autojump_clock, clock):
    class Flaky:
        async def __call__(self, run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
            await call_next()
            raise KeyError("metrics backend")

    task = Recording(clock)
    inst = await _run_one(clock, task, [Flaky()])
    assert len(task.runs) == 1
    assert inst.state is State.FAILED
    assert (
        inst.error == "MiddlewareFailed: run middleware Flaky failed: KeyError: 'metrics backend'"
    )


async def test_inner_middleware_failure_is_named_once(autojump_clock, clock):
    async def outer(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        return await call_next()

    async def inner(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        raise OSError("disk full")

    inst = await _run_one(clock, Recording(clock), [outer, inner])
    assert inst.error is not None
    assert inst.error == "MiddlewareFailed: run middleware inner failed: OSError: disk full"


async def test_error_a_middleware_makes_of_the_task_error_is_the_run_error(autojump_clock, clock):
    class Translated(Exception):
        pass

    async def translate(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        try:
            return await call_next()
        except ValueError as exc:
            raise Translated(f"wrapped {exc}") from exc

    task = Recording(clock)
    task.fail = ValueError("bad input")
    inst = await _run_one(clock, task, [translate])
    assert inst.error == "Translated: wrapped bad input"


async def test_call_next_twice_is_a_middleware_failure(autojump_clock, clock):
    async def twice(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        await call_next()
        return await call_next()

    task = Recording(clock)
    inst = await _run_one(clock, task, [twice])
    assert len(task.runs) == 1
    assert inst.state is State.FAILED
    assert inst.error == (
        "MiddlewareFailed: run middleware twice failed: TickworkError: call_next() may be "
        "awaited once per run"
    )


async def test_middleware_may_answer_without_running_the_task(autojump_clock, clock):
    async def skip(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        return "cached"

    task = Recording(clock)
    inst = await _run_one(clock, task, [skip])
    assert inst.state is State.SUCCEEDED
    assert task.runs == []


async def test_middleware_failure_is_retried_like_a_task_failure(autojump_clock, clock):
    calls = 0

    async def fails_first(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first time")
        return await call_next()

    task = Recording(clock)
    inst = await _run_one(clock, task, [fails_first], max_attempts=2)
    assert inst.state is State.SUCCEEDED
    assert inst.attempts == 2
    assert len(task.runs) == 1


async def test_timeout_and_abort_cancel_the_middleware_too(autojump_clock, clock):
    exits: list[str] = []

    async def slow(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        try:
            await trio.sleep(3600)  # e.g. waiting for a rate limiter
            return await call_next()
        finally:
            exits.append(run.instance.task)

    class Quick(Recording):
        timeout = timedelta(seconds=5)

    task, other = Quick(clock), Recording(clock, name="other")
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task, other], clock=clock, middleware=[slow]
    ) as sched:
        at = clock.now() + timedelta(seconds=1)
        timed = await sched.schedule("rec", at=at)
        aborted = await sched.schedule("other", at=at)
        await wait_until(lambda: sched.statistics().executor.running == 2)
        await sched.abort(aborted)
        await settle(sched)
        assert (await sched.get(aborted)).state is State.ABORTED
        timed_out = await sched.get(timed)
    assert timed_out.state is State.FAILED
    assert timed_out.error == "TaskTimeout: task 'rec' exceeded its timeout of 5 s"
    assert sorted(exits) == ["other", "rec"]
    assert task.runs == other.runs == []


async def _refused(**kwargs: Any) -> str:
    with pytest.raises(tickwork.InvalidArgument) as info:
        async with tickwork.open_scheduler(tickwork.MemoryStore(), **kwargs):
            pass  # pragma: no cover - refused before the node starts
    return str(info.value)


async def test_bad_middleware_is_refused_before_the_node_starts():
    async def good(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        return await call_next()

    def sync(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        return None

    assert "middleware must be a list" in await _refused(middleware=good)
    assert "middleware must be a list" in await _refused(middleware=3)
    assert "must be an async callable" in await _refused(middleware=[sync])
    assert "must be an async callable" in await _refused(middleware=[good, "x"])


async def test_run_context_is_read_only(autojump_clock, clock):
    refused: list[str] = []

    async def meddle(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        for field in ("instance", "task", "node_id", "started_us"):
            try:
                setattr(run, field, None)
            except AttributeError:
                refused.append(field)
        assert repr(run) == (
            f"RunContext(instance={run.instance.id}, task='rec', node_id='n1', "
            f"started_us={run.started_us})"
        )
        return await call_next()

    inst = await _run_one(clock, Recording(clock), [meddle])
    assert inst.state is State.SUCCEEDED
    assert refused == ["instance", "task", "node_id", "started_us"]
