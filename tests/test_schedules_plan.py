"""The pure parts of schedules: checking a definition, and the materialisation planner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from tickwork._time import to_us
from tickwork.errors import InvalidArgument, TickworkError
from tickwork.schedules.plan import (
    MISSED_ROWS_LIMIT,
    PAUSED,
    REMOVED,
    Occurrence,
    OccurrenceInfo,
    check,
    claim_plan,
    due_at,
    first_plan,
)
from tickwork.schedules.schedule import (
    Misfire,
    Overlap,
    Schedule,
    default_schedule_id,
    new_schedule,
    trigger_fields,
    trigger_from_fields,
)
from tickwork.schedules.triggers import Cron, Interval
from tickwork.state import State

S = 1_000_000
MIN = 60 * S
T0 = to_us(datetime(2031, 6, 2, tzinfo=UTC))
EVERY_MINUTE = Interval(timedelta(minutes=1))


# -- bad input: each refused with the field and the accepted forms ----------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Cron("61 * * * *"), "minute field '61' out of range 0-59; accepted: 5 fields"),
        (lambda: Cron("* * * *"), "has 4 fields; accepted: 5 fields"),
        (lambda: Cron("@reboot"), "unknown shortcut '@reboot'"),
        (lambda: Cron("* * * * *", "Mars/Base"), "unknown time zone 'Mars/Base'; use an IANA"),
        (lambda: Interval(timedelta(0)), "interval every must be positive"),
        (lambda: Interval(timedelta(seconds=-5)), "interval every must be positive"),
        (lambda: Interval(5), "interval every must be a timedelta"),  # type: ignore[arg-type]
        (
            lambda: new_schedule("t", "*/5 * * * *"),
            (
                "trigger must be tickwork.Cron('*/5 * * * *', 'Europe/Berlin') or "
                "tickwork.Interval(timedelta(minutes=5))"
            ),
        ),
        (
            lambda: new_schedule(
                "t",
                EVERY_MINUTE,
                start_at=datetime(2031, 2, 1, tzinfo=UTC),
                end_at=datetime(2031, 1, 1, tzinfo=UTC),
            ),
            "end_at (2031-01-01 00:00:00+00:00) must be after start_at",
        ),
        (
            lambda: new_schedule("t", EVERY_MINUTE, misfire="later"),
            "misfire must be one of 'run_once', 'run_all', 'skip', got 'later'",
        ),
        (
            lambda: new_schedule("t", EVERY_MINUTE, overlap="maybe"),
            "overlap must be one of 'allow', 'skip', 'queue', 'cancel_previous', got 'maybe'",
        ),
        (
            lambda: new_schedule("t", EVERY_MINUTE, catchup_limit=0),
            "catchup_limit must be an integer from 1 to 100000, got 0",
        ),
        (lambda: new_schedule("t", EVERY_MINUTE, catchup_limit=10**6), "catchup_limit"),
        (lambda: new_schedule("t", EVERY_MINUTE, catchup_limit=True), "catchup_limit"),
        (lambda: new_schedule("t", EVERY_MINUTE, catchup_limit="5"), "catchup_limit"),  # type: ignore[arg-type]
        (
            lambda: new_schedule("t", EVERY_MINUTE, grace=timedelta(seconds=-1)),
            "grace must be a timedelta >= 0 (or None)",
        ),
        (lambda: new_schedule("t", EVERY_MINUTE, grace=60), "grace must be a timedelta"),  # type: ignore[arg-type]
        (
            lambda: new_schedule("t", EVERY_MINUTE, jitter=timedelta(seconds=-1)),
            "jitter must be a timedelta >= 0",
        ),
        (
            lambda: new_schedule("t", EVERY_MINUTE, start_at=datetime(2031, 1, 1)),  # noqa: DTZ001
            "start_at 2031-01-01T00:00:00 is a naive datetime",
        ),
        (lambda: new_schedule("t", EVERY_MINUTE, end_at="tomorrow"), "end_at must be an aware"),  # type: ignore[arg-type]
        (lambda: new_schedule("t", EVERY_MINUTE, schedule_id=""), "schedule_id must be 1-200"),
        (lambda: new_schedule("t", EVERY_MINUTE, schedule_id="a b"), "without spaces"),
        (lambda: new_schedule("t", EVERY_MINUTE, schedule_id="x" * 201), "schedule_id"),
        (lambda: new_schedule("t", EVERY_MINUTE, params=object()), "params cannot be packed"),
        (lambda: new_schedule("", EVERY_MINUTE), "task must be a non-empty task name"),
        (lambda: new_schedule("t", EVERY_MINUTE, paused=1), "paused must be True or False"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_names_the_field(make: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make()  # type: ignore[operator]
    assert message in str(caught.value)
    assert isinstance(caught.value, TickworkError)


def test_a_definition_has_a_stable_default_id_and_policies_by_name_or_member() -> None:
    a = new_schedule("t", Cron("0 9 * * *", "Europe/Berlin"), params={"x": 1})
    b = new_schedule("t", Cron("0  9 * * *", "Europe/Berlin"), params={"x": 1})
    c = new_schedule("t", Cron("0 9 * * *", "Europe/Berlin"), params={"x": 2})
    assert a.id == b.id == default_schedule_id("t", a.trigger, a.params)
    assert a.id.startswith("sched-")
    assert c.id != a.id
    named = new_schedule("t", EVERY_MINUTE, misfire="skip", overlap="cancel_previous")
    members = new_schedule("t", EVERY_MINUTE, misfire=Misfire.SKIP, overlap=Overlap.CANCEL_PREVIOUS)
    assert named == members
    assert named.differences(new_schedule("t", EVERY_MINUTE)) == ["misfire", "overlap"]
    assert (named.grace, named.jitter, named.catchup_limit) == (
        timedelta(minutes=1),
        timedelta(0),
        100,
    )


@pytest.mark.parametrize(
    "trigger",
    [
        Cron("*/5 * * * *"),
        Cron("0 30 2 * * MON#2", "Australia/Lord_Howe"),
        Interval(timedelta(seconds=90)),
        Interval(timedelta(hours=1), datetime(2031, 1, 1, 0, 0, 0, 5, tzinfo=UTC)),
    ],
)
def test_triggers_are_stored_as_their_fields(trigger: Cron | Interval) -> None:
    fields = trigger_fields(trigger)
    assert trigger_from_fields(fields) == trigger
    assert fields[0] == ("cron" if isinstance(trigger, Cron) else "interval")
    with pytest.raises(ValueError, match="unknown stored trigger"):
        trigger_from_fields(("rrule", None, None, None, None))


# -- the planner --------------------------------------------------------------------------------


def test_first_plan_honours_start_end_and_jitter() -> None:
    s = new_schedule(
        "t",
        EVERY_MINUTE,
        schedule_id="s",
        start_at=datetime(2031, 6, 3, tzinfo=UTC),
        end_at=datetime(2031, 6, 3, 0, 2, tzinfo=UTC),
        jitter=timedelta(seconds=30),
    )
    plan = first_plan(s, T0)
    [row] = plan.insert
    start = to_us(datetime(2031, 6, 3, tzinfo=UTC))
    assert row.fire_at_us == start  # the start itself is a fire time
    assert row.run_at_us == due_at(s, start)
    assert start <= row.run_at_us < start + 30 * S
    assert plan.next_run_us == row.run_at_us
    assert (plan.last_fire_us, plan.ended) == (start, False)
    after_end = first_plan(s, start + 5 * MIN)
    assert (after_end.insert, after_end.ended) == ([], True)


def _with_head(s: Schedule, fire: int) -> Schedule:
    return attrs.evolve(s, last_fire_us=fire)


def test_the_head_claimed_on_time_writes_the_next_one() -> None:
    s = _with_head(new_schedule("t", EVERY_MINUTE, schedule_id="s"), T0 + MIN)
    plan = claim_plan(s, [Occurrence(7, T0 + MIN, T0 + MIN, claimed=True)], [], T0)
    assert [(r.fire_at_us, r.state) for r in plan.insert] == [(T0 + 2 * MIN, State.PENDING)]
    assert plan.end == []
    # a claimed occurrence that is not the head writes nothing
    other = claim_plan(s, [Occurrence(6, T0, T0, claimed=True)], [], T0)
    assert (other.insert, other.end, other.last_fire_us) == ([], [], T0 + MIN)


def test_a_cron_catch_up_beyond_the_bound_is_summarised_without_counting() -> None:
    s = _with_head(new_schedule("t", Cron("* * * * *"), schedule_id="c", misfire="skip"), T0)
    now = T0 + 10 * 24 * 60 * MIN
    plan = claim_plan(s, [Occurrence(1, T0, T0, claimed=True)], [], now)
    missed = [r for r in plan.insert if r.state is State.MISSED]
    assert len(missed) == MISSED_ROWS_LIMIT + 1
    assert (missed[-1].error or "").startswith("misfire=skip: this and more later occurrences")
    assert plan.end == [(1, plan.end[0][1])]
    assert [r.fire_at_us for r in plan.insert if r.state is State.PENDING] == [now - MIN]


def test_with_jitter_lateness_is_judged_on_the_due_time() -> None:
    s = new_schedule(
        "t", EVERY_MINUTE, schedule_id="j", misfire="skip", jitter=timedelta(seconds=50)
    )
    s = _with_head(s, T0)
    now = T0 + 24 * 60 * MIN
    plan = claim_plan(s, [Occurrence(1, T0, due_at(s, T0), claimed=True)], [], now)
    threshold = now - s.grace_us
    for row in plan.insert:
        late = row.run_at_us < threshold
        assert late == (row.state is State.MISSED), row
    [pending] = [r for r in plan.insert if r.state is State.PENDING]
    assert pending.run_at_us >= threshold
    assert len(plan.insert) <= MISSED_ROWS_LIMIT + 1 + 3  # bounded, whatever the jitter


def test_run_once_with_nothing_late_claimed_coalesces_into_the_on_time_run() -> None:
    # a zero grace and a jittered head claimed right at its time: the next fire time is
    # already past, and the occurrence running now stands for it
    s = new_schedule("t", EVERY_MINUTE, schedule_id="r", grace=timedelta(0))
    s = _with_head(s, T0)
    plan = claim_plan(s, [Occurrence(1, T0, T0 + 2 * MIN, claimed=True)], [], T0 + 2 * MIN)
    states = [(r.fire_at_us, r.state) for r in plan.insert]
    assert states == [(T0 + MIN, State.MISSED), (T0 + 2 * MIN, State.PENDING)]
    assert "coalesced into the occurrence that ran on time" in (plan.insert[0].error or "")


# -- the verdict at due time ----------------------------------------------------------------------


def test_check_verdicts() -> None:
    s = new_schedule("t", EVERY_MINUTE, schedule_id="v", misfire="run_all", overlap="queue")
    info = OccurrenceInfo(1, "v", T0, T0, None)
    on_time = check(1, info, s, T0 + S)
    assert (on_time.run, on_time.overlap, on_time.catchup) == (True, Overlap.QUEUE, False)
    assert check(1, info, s, T0 + 2 * MIN).catchup
    assert check(1, None, None, T0).run  # a row no longer stored: nothing to check
    detached = OccurrenceInfo(1, "v", None, T0, "schedule replaced (...)")
    assert (check(1, detached, s, T0).state, check(1, detached, s, T0).reason) == (
        State.ABORTED,
        "schedule replaced (...)",
    )
    gone = check(1, info, None, T0)
    assert (gone.run, gone.state, gone.reason) == (False, State.ABORTED, REMOVED)
    paused = check(1, info, attrs.evolve(s, paused=True), T0)
    assert (paused.run, paused.state, paused.reason) == (False, State.MISSED, PAUSED)
