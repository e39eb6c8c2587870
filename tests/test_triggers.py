"""Triggers as pure tables: expression, zone, start, and the fire times that follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest

from tickwork.errors import InvalidArgument, TickworkError
from tickwork.schedules.triggers import Cron, Interval, jitter_us


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(trigger: Cron | Interval, start: datetime, n: int) -> list[str]:
    """The next ``n`` fire times after ``start``, as ISO text (the offset shows the fold)."""
    out = []
    at: datetime | None = start
    for _ in range(n):
        at = trigger.next_after(at)
        assert at is not None
        out.append(at.isoformat())
    return out


# --- plain cron, no DST ---------------------------------------------------------------

JAN1 = utc(2026, 1, 1)  # a Thursday

UTC_TABLE = [
    ("*/15 * * * *", JAN1, ["2026-01-01T00:15:00", "2026-01-01T00:30:00", "2026-01-01T00:45:00"]),
    (
        "0 9 * * MON-FRI",
        JAN1,
        ["2026-01-01T09:00:00", "2026-01-02T09:00:00", "2026-01-05T09:00:00"],
    ),
    (
        "0 9 * * mon-fri",
        JAN1,
        ["2026-01-01T09:00:00", "2026-01-02T09:00:00", "2026-01-05T09:00:00"],
    ),
    ("0 0 * * 7", JAN1, ["2026-01-04T00:00:00", "2026-01-11T00:00:00"]),
    ("0 0 * * 0", JAN1, ["2026-01-04T00:00:00", "2026-01-11T00:00:00"]),
    ("0 0 1,15 * *", JAN1, ["2026-01-15T00:00:00", "2026-02-01T00:00:00"]),
    ("0 0 */10 * *", JAN1, ["2026-01-11T00:00:00", "2026-01-21T00:00:00", "2026-01-31T00:00:00"]),
    ("0 0 1 JAN,JUL *", JAN1, ["2026-07-01T00:00:00", "2027-01-01T00:00:00"]),
    ("0 12 1-3/2 * *", JAN1, ["2026-01-01T12:00:00", "2026-01-03T12:00:00", "2026-02-01T12:00:00"]),
    # day-of-month and day-of-week are OR-ed when neither starts with '*' (Vixie)
    ("0 0 13 * FRI", JAN1, ["2026-01-02T00:00:00", "2026-01-09T00:00:00", "2026-01-13T00:00:00"]),
    ("0 0 L * *", utc(2028, 1, 31, 12), ["2028-02-29T00:00:00", "2028-03-31T00:00:00"]),
    ("0 0 LW * *", JAN1, ["2026-01-30T00:00:00", "2026-02-27T00:00:00", "2026-03-31T00:00:00"]),
    ("0 0 * * 5L", JAN1, ["2026-01-30T00:00:00", "2026-02-27T00:00:00", "2026-03-27T00:00:00"]),
    ("0 0 * * MON#2", JAN1, ["2026-01-12T00:00:00", "2026-02-09T00:00:00", "2026-03-09T00:00:00"]),
    ("0 0 * 2 MON#5", JAN1, ["2044-02-29T00:00:00"]),
    ("0 0 29 2 *", JAN1, ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]),
    # a leading sixth field is seconds
    ("*/20 * * * * *", JAN1, ["2026-01-01T00:00:20", "2026-01-01T00:00:40", "2026-01-01T00:01:00"]),
    ("30 0 12 * * *", JAN1, ["2026-01-01T12:00:30", "2026-01-02T12:00:30"]),
    ("@yearly", JAN1, ["2027-01-01T00:00:00"]),
    ("@annually", JAN1, ["2027-01-01T00:00:00"]),
    ("@monthly", JAN1, ["2026-02-01T00:00:00"]),
    ("@weekly", JAN1, ["2026-01-04T00:00:00"]),
    ("@daily", JAN1, ["2026-01-02T00:00:00"]),
    ("@midnight", JAN1, ["2026-01-02T00:00:00"]),
    ("@hourly", JAN1, ["2026-01-01T01:00:00", "2026-01-01T02:00:00"]),
    ("@HOURLY", JAN1, ["2026-01-01T01:00:00"]),
]


@pytest.mark.parametrize(("expr", "start", "expected"), UTC_TABLE)
def test_cron_in_utc(expr, start, expected):
    assert fires(Cron(expr), start, len(expected)) == [e + "+00:00" for e in expected]


def test_next_after_is_strictly_after_and_keeps_microseconds_out():
    cron = Cron("* * * * *")
    assert cron.next_after(utc(2026, 1, 1, 0, 0)) == utc(2026, 1, 1, 0, 1)
    assert cron.next_after(utc(2026, 1, 1, 0, 0, 59, 999_999)) == utc(2026, 1, 1, 0, 1)
    assert cron.next_after(utc(2025, 12, 31, 23, 59, 59, 1)) == utc(2026, 1, 1)


def test_next_after_answers_in_the_schedule_zone_for_any_input_zone():
    cron = Cron("0 9 * * *", "Asia/Tokyo")
    got = cron.next_after(datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("America/Los_Angeles")))
    assert got is not None
    assert got.tzinfo == ZoneInfo("Asia/Tokyo")
    assert got.isoformat() == "2026-01-02T09:00:00+09:00"


def test_next_after_us_matches_next_after():
    cron = Cron("30 2 * * *", "Europe/Berlin")
    start = utc(2026, 3, 28, 12)
    start_us = (start - utc(1970, 1, 1)) // timedelta(microseconds=1)
    fire = cron.next_after(start)
    assert fire is not None
    assert cron.next_after_us(start_us) == (fire - utc(1970, 1, 1)) // timedelta(microseconds=1)


def test_no_fire_left_within_datetime_range():
    assert Cron("@daily").next_after(datetime(9999, 12, 31, 12, tzinfo=UTC)) is None
    assert Cron("@yearly", "Europe/Berlin").next_after(utc(9998, 6, 1)) is None
    Cron("@daily").next_after(datetime(1, 1, 1, tzinfo=UTC))  # answers, does not raise


# --- DST: Vixie cron's rules --------------------------------------------------------

DST_TABLE = [
    # fixed-time, spring forward: the skipped 02:30 fires once, at the end of the gap
    ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12),
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    # several skipped times collapse into one firing; so does one that the gap's end matches
    ("15,45 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12),
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:15:00+02:00"]),
    ("0 2,3 * * *", "Europe/Berlin", utc(2026, 3, 28, 12),
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]),
    # fixed-time, fall back: the repeated time fires at its first occurrence only
    ("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12),
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12),
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    # ... also when asked from inside the second pass (cronsim alone answers 01:30 EDT,
    # which is *before* the question)
    ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 10),
     ["2026-11-02T01:30:00-05:00"]),
    # wildcard: follows real time, so a repeated hour fires twice ...
    ("0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30),
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("@hourly", "Europe/Berlin", utc(2026, 10, 24, 23, 30),
     ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
    ("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 50),
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00",
      "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"]),
    # ... and a skipped hour not at all
    ("*/30 * * * *", "America/New_York", utc(2026, 3, 8, 6, 40),
     ["2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]),
    ("* 2 * * *", "Europe/Berlin", utc(2026, 3, 29), ["2026-03-30T02:00:00+02:00"]),
    # @daily is fixed-time: where midnight is skipped (Santiago) it fires at 01:00
    ("@daily", "America/Santiago", utc(2026, 9, 5, 12),
     ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]),
    # Lord Howe: 30-minute changes (02:00 -> 02:30 in October, 02:00 -> 01:30 in April)
    ("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 12),
     ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    ("*/15 * * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 15, 10),
     ["2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"]),
    ("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 12),
     ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    ("45 * * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 14),
     ["2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30", "2026-04-05T02:45:00+10:30"]),
    # (cronsim alone skips 02:00-02:29 here)
    ("* 2 * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 14),
     ["2026-04-05T02:00:00+10:30", "2026-04-05T02:01:00+10:30"]),
    # Chatham: :45 offsets, changes at 02:45 / 03:45 local
    ("0 3 * * *", "Pacific/Chatham", utc(2026, 9, 26, 12),
     ["2026-09-27T03:45:00+13:45", "2026-09-28T03:00:00+13:45"]),
    ("0 * * * *", "Pacific/Chatham", utc(2026, 9, 26, 13),
     ["2026-09-27T02:00:00+12:45", "2026-09-27T04:00:00+13:45"]),
    ("0 3 * * *", "Pacific/Chatham", utc(2026, 4, 4, 12),
     ["2026-04-05T03:00:00+13:45", "2026-04-06T03:00:00+12:45"]),
    ("0 * * * *", "Pacific/Chatham", utc(2026, 4, 4, 13),
     ["2026-04-05T03:00:00+13:45", "2026-04-05T03:00:00+12:45", "2026-04-05T04:00:00+12:45"]),
    # with a seconds field the same rules apply (cronsim alone applies none to 6 fields)
    ("30 15 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12),
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:15:30+02:00"]),
    ("*/20 30 1 * * *", "America/New_York", utc(2026, 11, 1, 5),
     ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:20-04:00", "2026-11-01T01:30:40-04:00",
      "2026-11-02T01:30:00-05:00"]),
    ("0 0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30),
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), DST_TABLE)
def test_cron_across_dst(expr, zone, start, expected):
    assert fires(Cron(expr, zone), start, len(expected)) == expected


def test_issue_examples_in_utc():
    spring = Cron("30 2 * * *", "Europe/Berlin").next_after(utc(2026, 3, 28, 12))
    assert spring is not None
    assert spring.astimezone(UTC) == utc(2026, 3, 29, 1)
    autumn = Cron("30 1 * * *", "America/New_York").next_after(utc(2026, 10, 31, 12))
    assert autumn is not None
    assert autumn.astimezone(UTC) == utc(2026, 11, 1, 5, 30)


@pytest.mark.parametrize(
    ("expr", "fixed"),
    [
        ("30 2 * * *", True),
        ("@daily", True),
        ("@weekly", True),
        ("0-59/20 1-3 * * *", True),  # Vixie looks only at the first character
        ("* 30 2 * * *", True),  # the seconds field does not count
        ("@hourly", False),
        ("*/15 * * * *", False),
        ("0 */2 * * *", False),
        ("*/20 1-3 * * *", False),
        ("0 * 2 * * *", False),
    ],
)
def test_fixed_time_classification(expr, fixed):
    assert Cron(expr).is_fixed_time is fixed


# --- the Cron value -----------------------------------------------------------------


def test_cron_is_a_canonical_frozen_value():
    a = Cron("0  9 * *   mon", "Europe/Berlin")
    b = Cron("0 9 * * MON", timezone="Europe/Berlin")
    assert a == b
    assert hash(a) == hash(b)
    assert a.expr == "0 9 * * MON"
    assert a.timezone == "Europe/Berlin"
    assert a.zone == ZoneInfo("Europe/Berlin")
    assert a != Cron("0 9 * * MON")
    assert Cron("@Daily").expr == "@daily"
    assert repr(a) == "Cron(expr='0 9 * * MON', timezone='Europe/Berlin')"
    assert a.describe() == "cron '0 9 * * MON' in Europe/Berlin"
    assert Cron("*/5 * * * *").describe() == "cron '*/5 * * * *' in UTC"
    assert len({a, b, Cron("0 9 * * MON")}) == 2
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.expr = "0 10 * * *"  # type: ignore[misc]


ACCEPTED = "accepted: 5 fields 'min hour day month weekday', 6 with leading seconds"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "cron expression '61 * * * *': minute field '61' out of range 0-59"),
        ("0 24 * * *", "hour field '24' out of range 0-23"),
        ("0 0 32 * *", "day-of-month field '32' out of range 1-31"),
        ("0 0 0 * *", "day-of-month field '0' out of range 1-31"),
        ("0 0 * 13 *", "month field '13' out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8' out of range 0-7"),
        ("0 0 * * 1-9", "day-of-week field '1-9' out of range 0-7"),
        ("60 0 0 * * *", "second field '60' out of range 0-59"),
        ("*/0 * * * *", "minute field '*/0' has a step of 0"),
        ("5-1 * * * *", "minute field '5-1' is not understood (accepted in this field: N, N-M"),
        ("0 0 ? * *", "day-of-month field '?' is not understood"),
        ("0 0 15W * *", "day-of-month field '15W' is not understood"),
        ("0 0 * FOO *", "month field 'FOO' is not understood"),
        ("0 0 * * 1#6", "day-of-week field '1#6' is not understood"),
        ("0 0 * * L", "day-of-week field 'L' is not understood"),
        ("* * * *", "cron expression '* * * *' has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("", "cron expression '' has 0 fields"),
        ("@reboot", "cron expression '@reboot': unknown shortcut '@reboot'"),
        ("@daily *", "has 2 fields"),
        ("0 0 31 2 *", "day-of-month field '31' never occurs in month field '2'"),
        ("0 0 30 2,FEB *", "day-of-month field '30' never occurs in month field '2,FEB'"),
    ],
)
def test_malformed_expression_is_refused_with_field_and_forms(expr, message):
    with pytest.raises(InvalidArgument) as caught:
        Cron(expr)
    assert message in str(caught.value)
    assert ACCEPTED in str(caught.value)
    assert isinstance(caught.value, TickworkError)


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("Mars/Base", "unknown time zone 'Mars/Base'; use an IANA name such as Europe/Berlin"),
        ("", "unknown time zone ''; use an IANA name"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("Europe", "unknown time zone 'Europe'"),
        ("localtime", "time zone 'localtime' depends on the host; use an IANA name"),
        (3600, "time zone must be a str, got int; use an IANA name"),
    ],
)
def test_unknown_zone_is_refused(zone, message):
    with pytest.raises(InvalidArgument) as caught:
        Cron("@daily", zone)
    assert message in str(caught.value)


def test_non_string_expression_is_refused():
    with pytest.raises(InvalidArgument, match="cron expression must be a str, got int"):
        Cron(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("trigger", [Cron("@daily"), Interval(timedelta(hours=1))])
def test_naive_or_non_datetime_question_is_refused(trigger):
    with pytest.raises(InvalidArgument, match="naive datetime; pass a timezone-aware one"):
        trigger.next_after(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(InvalidArgument, match="must be a datetime, got str"):
        trigger.next_after("2026-01-01")


# --- Interval -------------------------------------------------------------------------


def test_interval_without_start_is_anchored_at_the_epoch():
    hourly = Interval(timedelta(hours=1))
    assert hourly.next_after(utc(2026, 1, 1, 0, 30)) == utc(2026, 1, 1, 1)
    assert hourly.next_after(utc(2026, 1, 1, 1)) == utc(2026, 1, 1, 2)
    assert Interval(timedelta(minutes=15)).next_after(utc(2026, 1, 1, 0, 7, 1)) == utc(
        2026, 1, 1, 0, 15
    )
    seven = Interval(timedelta(seconds=7))
    assert seven.next_after(utc(1970, 1, 1)) == utc(1970, 1, 1, 0, 0, 7)
    assert seven.next_after(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == utc(1970, 1, 1)
    assert not hourly.is_fixed_time


def test_interval_with_start_counts_elapsed_time_from_it():
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=berlin)  # 23:30 UTC the day before
    daily = Interval(timedelta(days=1), start)
    assert daily.start == utc(2026, 3, 28, 23, 30)
    assert daily.next_after(utc(2000, 1, 1)) == utc(2026, 3, 28, 23, 30)  # start itself
    # 24 hours later, across the change: 01:30 on the Berlin clock
    assert fires(daily, start, 2) == ["2026-03-29T23:30:00+00:00", "2026-03-30T23:30:00+00:00"]
    assert daily == Interval(timedelta(hours=24), utc(2026, 3, 28, 23, 30))
    assert hash(daily) == hash(Interval(timedelta(hours=24), utc(2026, 3, 28, 23, 30)))


def test_interval_microseconds_and_far_future():
    tick = Interval(timedelta(microseconds=1500), utc(2026, 1, 1))
    assert tick.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 0, 1500)
    assert tick.next_after(utc(2026, 1, 1, 0, 0, 0, 1500)) == utc(2026, 1, 1, 0, 0, 0, 3000)
    assert Interval(timedelta(days=1)).next_after(datetime(9999, 12, 31, 1, tzinfo=UTC)) is None


def test_interval_describe_and_repr():
    assert Interval(timedelta(hours=1)).describe() == "every 3600s from 1970-01-01T00:00:00+00:00"
    assert (
        Interval(timedelta(microseconds=1500), utc(2026, 1, 1)).describe()
        == "every 0.001500s from 2026-01-01T00:00:00+00:00"
    )
    assert repr(Interval(timedelta(seconds=5))) == (
        "Interval(every=datetime.timedelta(seconds=5), start=None)"
    )


@pytest.mark.parametrize(
    ("every", "start", "message"),
    [
        (timedelta(0), None, "interval every must be positive, got datetime.timedelta(0)"),
        (timedelta(seconds=-1), None, "interval every must be positive"),
        (60, None, "interval every must be a timedelta, got int"),
        (timedelta(1), datetime(2026, 1, 1), "interval start 2026-01-01T00:00:00 is a naive"),  # noqa: DTZ001
        (timedelta(1), "2026-01-01", "interval start must be a datetime, got str"),
    ],
)
def test_interval_refusals(every, start, message):
    with pytest.raises(InvalidArgument) as caught:
        Interval(every, start)
    assert message in str(caught.value)


# --- jitter ---------------------------------------------------------------------------


def test_jitter_is_deterministic_and_in_range():
    minute = 60_000_000
    first = jitter_us("nightly-report", 1_700_000_000_000_000, minute)
    assert first == jitter_us("nightly-report", 1_700_000_000_000_000, minute)
    assert 0 <= first < minute
    assert first != jitter_us("nightly-report", 1_700_000_060_000_000, minute)
    assert first != jitter_us("other-report", 1_700_000_000_000_000, minute)
    assert jitter_us("nightly-report", 1_700_000_000_000_000, 0) == 0
    assert jitter_us("x", 0, 1) == 0


def test_jitter_spreads_schedules_over_the_window():
    values = [jitter_us(f"schedule-{i}", 1_700_000_000_000_000, 1000) for i in range(2000)]
    assert all(0 <= v < 1000 for v in values)
    assert len(set(values)) > 800
    assert 400 < sum(values) / len(values) < 600


def test_negative_jitter_is_refused():
    with pytest.raises(InvalidArgument, match="jitter must be >= 0 microseconds, got -1"):
        jitter_us("s", 0, -1)
