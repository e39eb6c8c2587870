"""Fuzzing the parsers of user text: whatever the text, only the library's own refusal
comes out (``InvalidArgument``; one clean line per refused crontab line).

Bounded and derandomized, so CI runs the same few hundred examples in a second or two.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.strategies import cron_like
from tickwork.errors import InvalidArgument
from tickwork.schedules import cron as _cron
from tickwork.schedules.triggers import Cron

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_2026 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
zones = st.sampled_from(["UTC", "Europe/Berlin", "Mars/Base", "", "../etc", "UTC\x00"])


def _cron_or_refusal(expr: str, zone: str = "UTC") -> Cron | None:
    try:
        return Cron(expr, zone)
    except InvalidArgument:  # the refusal, and nothing else, may escape
        return None


@FUZZ
@given(st.text())
def test_any_text_is_an_expression_or_invalid_argument(expr: str) -> None:
    _cron_or_refusal(expr)


@FUZZ
@given(cron_like, zones)
def test_cron_like_text_is_an_expression_or_invalid_argument(expr: str, zone: str) -> None:
    trigger = _cron_or_refusal(expr, zone)
    if trigger is not None:
        assert expr.isascii()
        fire = trigger.next_after_us(_2026)
        assert fire is None or fire > _2026
        assert Cron(trigger.expr, trigger.timezone) == trigger  # the canonical text parses


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_a_non_str_expression_is_invalid_argument(expr: object) -> None:
    with pytest.raises(InvalidArgument, match="must be a str"):
        _cron.parse(expr)
