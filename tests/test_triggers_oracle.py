"""Cron against a brute-force oracle of Vixie cron's DST rules.

The oracle walks real time in UTC minute by minute (second by second for expressions
with a seconds field), reads each instant's local wall time, and decides by the rules
alone whether it fires:

- wildcard expression (minute or hour field starts with ``*``): fires when the wall
  time matches;
- fixed-time expression: fires when the wall time matches and this is its first
  occurrence (``fold == 0``), or when the instant ends a spring-forward gap that
  skipped at least one matching wall time.

Which naive wall times match is cronsim's answer (parsing is not under test here, the
mapping between wall time and real time is).
"""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.strategies import aware_datetimes, cron_expressions, zones
from tickwork.errors import InvalidArgument
from tickwork.schedules.triggers import Cron

SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def expand(expr: str) -> str:
    return SHORTCUTS.get(expr, expr)


def is_fixed(expr: str) -> bool:
    fields = expand(expr).split()
    minute, hour = fields[-5], fields[-4]
    return not minute.startswith("*") and not hour.startswith("*")


def step_of(expr: str) -> timedelta:
    return SECOND if len(expand(expr).split()) == 6 else MINUTE


def wall(t: datetime, zone: ZoneInfo) -> tuple[datetime, int]:
    local = t.astimezone(zone)
    return local.replace(tzinfo=None), local.fold


def matches_between(expr: str, lo: datetime, hi: datetime) -> set[datetime]:
    """Every naive wall time in ``(lo, hi]`` that the expression matches."""
    out = set()
    for found in CronSim(expand(expr), lo):
        if found > hi:
            break
        out.add(found)
    return out


@functools.lru_cache(maxsize=8)
def walk(
    zone: ZoneInfo, start: datetime, end: datetime, step: timedelta
) -> list[tuple[datetime, int]]:
    """The wall time and fold of every instant ``start + i * step`` up to ``end``."""
    return [wall(start + i * step, zone) for i in range((end - start) // step + 1)]


def oracle_fires(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The UTC fire instants in ``(start, end]``, found by walking real time."""
    step = step_of(expr)
    walls = walk(zone, start, end, step)
    lo = min(w for w, _ in walls) - step
    matching = matches_between(expr, lo, max(w for w, _ in walls))
    ordered = sorted(matching)
    fixed = is_fixed(expr)
    fires = []
    for i in range(1, len(walls)):
        (prev, _), (now, fold) = walls[i - 1], walls[i]
        fire = now in matching and (not fixed or fold == 0)
        if fixed and now - prev > step:
            # A gap: the wall times strictly between prev and now never happened.
            j = bisect.bisect_right(ordered, prev)
            fire = fire or (j < len(ordered) and ordered[j] < now)
        if fire:
            fires.append(start + i * step)
    return fires


def oracle_fires_at(expr: str, zone: ZoneInfo, t: datetime) -> bool:
    """Whether the oracle fires at the whole-second instant ``t`` (checked on its own)."""
    now, fold = wall(t, zone)
    prev, _ = wall(t - SECOND, zone)
    matches = next(CronSim(expand(expr), now - SECOND)) == now
    if not is_fixed(expr):
        return matches
    skipped = now - prev > SECOND and next(CronSim(expand(expr), prev)) < now
    return (matches and fold == 0) or skipped


def utc(t: datetime | None) -> datetime | None:
    # Compare in UTC: Python compares datetimes of one zone by wall time, ignoring fold,
    # and an ambiguous time is never == to a time in another zone (PEP 495).
    return None if t is None else t.astimezone(UTC)


def trigger_fires(cron: Cron, start: datetime, end: datetime) -> list[datetime]:
    fires = []
    at = cron.next_after(start)
    while at is not None and at <= end:
        fires.append(at.astimezone(UTC))
        at = cron.next_after(at)
    return fires


@functools.cache
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """Instants (to the hour) after which the zone's UTC offset changed, found by probing."""
    zone = ZoneInfo(zone_name)
    t = datetime(year, 1, 1, tzinfo=UTC)
    out = []
    offset = t.astimezone(zone).utcoffset()
    while t.year == year:
        t += timedelta(hours=1)
        now = t.astimezone(zone).utcoffset()
        if now != offset:
            out.append(t)
            offset = now
    return tuple(out)


ZONES_2026 = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute change
    "Pacific/Chatham",  # :45 offsets, change at 02:45/03:45
    "America/Santiago",  # change at midnight: 00:00 is skipped in spring
    "America/Havana",  # change at midnight: 00:xx repeats in autumn
    "Antarctica/Troll",  # two-hour change
    "Africa/Casablanca",  # "negative" DST around Ramadan
    "America/St_Johns",  # :30 offset
    "Australia/Sydney",
]
# One-off changes that are not DST: whole-day, half-hour and permanent shifts.
ODD_CHANGES = [
    ("Pacific/Apia", datetime(2011, 12, 30, 10, tzinfo=UTC)),  # skipped 30 Dec 2011
    ("Europe/Moscow", datetime(2014, 10, 25, 22, tzinfo=UTC)),  # back 1 h for good
    ("America/Caracas", datetime(2007, 12, 9, 7, tzinfo=UTC)),  # back 30 min
    ("America/Caracas", datetime(2016, 5, 1, 7, tzinfo=UTC)),  # forward 30 min
    ("Asia/Pyongyang", datetime(2015, 8, 14, 15, tzinfo=UTC)),  # back 30 min
]
CASES = [(z, t) for z in ZONES_2026 for t in transitions(z, 2026)] + ODD_CHANGES

FIVE_FIELD = [
    # fixed-time
    "30 2 * * *",
    "30 1 * * *",
    "0 2 * * *",
    "0 3 * * *",
    "15,45 2 * * *",
    "0 2,3 * * *",
    "@daily",
    "30 0 * * *",
    "5 1-3 * * *",
    "45 1,2 * * *",
    "0-59/20 1-3 * * *",  # fixed-time for Vixie: the field does not *start* with '*'
    "0 12 * * *",
    "0 2 * * SUN",
    "30 23 * * *",
    # wildcard
    "@hourly",
    "*/15 * * * *",
    "30 * * * *",
    "45 * * * *",
    "*/20 1-3 * * *",
    "* 2 * * *",
    "0 */2 * * *",
    "15 * * * SUN",
]
SIX_FIELD = ["0 30 2 * * *", "*/20 30 1 * * *", "15 45 1,2 * * *", "0 0 * * * *", "*/30 * 2 * * *"]


@pytest.mark.parametrize(("zone_name", "change"), CASES, ids=lambda v: str(v)[:16])
def test_matches_oracle_around_changes(zone_name, change):
    zone = ZoneInfo(zone_name)
    start, end = change - timedelta(hours=26), change + timedelta(hours=26)
    for expr in FIVE_FIELD:
        cron = Cron(expr, zone_name)
        expected = oracle_fires(expr, zone, start, end)
        assert trigger_fires(cron, start, end) == expected, expr
        # From arbitrary points near the change (inside repeated and skipped hours),
        # next_after must agree with the oracle's next fire.
        for i in range(40):
            after = (
                change - timedelta(hours=2) + i * timedelta(minutes=6, seconds=7, microseconds=3)
            )
            j = bisect.bisect_right(expected, after)
            got = utc(cron.next_after(after))
            if j < len(expected):
                assert got == expected[j], (expr, after)
            else:  # the oracle's window ends first
                assert got is None or got > end, (expr, after)


@pytest.mark.parametrize(("zone_name", "change"), CASES[::2] + ODD_CHANGES[-2:])
def test_seconds_field_matches_oracle(zone_name, change):
    zone = ZoneInfo(zone_name)
    start, end = change - timedelta(hours=2), change + timedelta(hours=2)
    for expr in SIX_FIELD:
        assert trigger_fires(Cron(expr, zone_name), start, end) == oracle_fires(
            expr, zone, start, end
        ), expr


def test_oracle_itself_on_the_issue_examples():
    # The oracle encodes the rules; pin it on the two cases the issue spells out.
    berlin, new_york = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
    spring = oracle_fires(
        "30 2 * * *",
        berlin,
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        datetime(2026, 3, 30, tzinfo=UTC),
    )
    assert spring == [datetime(2026, 3, 29, 1, tzinfo=UTC)]
    autumn = oracle_fires(
        "30 1 * * *",
        new_york,
        datetime(2026, 10, 31, 12, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    assert autumn == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]


def near_change(zone_name: str) -> st.SearchStrategy[datetime]:
    changes = transitions(zone_name, 2026)
    if not changes:
        return aware_datetimes()
    return st.tuples(st.sampled_from(changes), st.integers(-3 * 3600, 3 * 3600)).map(
        lambda ct: ct[0] + timedelta(seconds=ct[1], microseconds=ct[1] % 7)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=cron_expressions(), zone_name=zones, data=st.data())
def test_fire_times_increase_match_and_are_complete(expr, zone_name, data):
    try:
        cron = Cron(expr, zone_name)
    except InvalidArgument:
        assume(False)
    zone = ZoneInfo(zone_name)
    strategy = near_change(zone_name) if data.draw(st.booleans()) else aware_datetimes()
    start = data.draw(strategy, label="start")
    fires = []
    at = start
    for _ in range(12):
        nxt = cron.next_after(at)
        if nxt is None:
            break
        assert nxt.tzinfo is zone
        assert utc(nxt) > utc(at), "strictly increasing, so never produced twice"
        assert oracle_fires_at(expr, zone, utc(nxt)), nxt
        fires.append(utc(nxt))
        at = nxt
    # Nothing was skipped: over a short stretch the walk finds exactly these fires.
    horizon = start + (6 * timedelta(hours=1) if step_of(expr) == MINUTE else 10 * MINUTE)
    if fires and fires[-1] < horizon:
        horizon = fires[-1]
    walk_start = start.replace(microsecond=0)
    if step_of(expr) == MINUTE:
        walk_start = walk_start.replace(second=0)
    expected = [t for t in oracle_fires(expr, zone, walk_start, horizon) if t > start]
    assert [t for t in fires if t <= horizon] == expected
