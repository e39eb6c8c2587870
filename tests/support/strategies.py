"""Hypothesis strategies shared by the test suite, kept in one place (as attrs does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import available_timezones

from hypothesis import strategies as st

SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

#: every IANA zone this machine knows, sorted so that examples replay
zones = st.sampled_from(sorted(available_timezones()))


@st.composite
def _atom(draw: st.DrawFn, lo: int, hi: int) -> str:
    """One term of a cron field: ``*``, ``N``, ``N-M``, each optionally with ``/S``."""
    kind = draw(st.sampled_from(["star", "value", "range"]))
    if kind == "star":
        base = "*"
    elif kind == "value":
        base = str(draw(st.integers(lo, hi)))
    else:
        a = draw(st.integers(lo, hi))
        base = f"{a}-{draw(st.integers(a, hi))}"
    if kind != "value" and draw(st.booleans()):
        base += f"/{draw(st.integers(1, hi - lo + 1))}"
    return base


def cron_field(
    lo: int, hi: int, extras: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[str]:
    """A cron field over ``lo..hi``: a term or a comma list of up to three (or an extra form)."""
    terms = st.lists(_atom(lo, hi), min_size=1, max_size=3).map(",".join)
    return terms if extras is None else st.one_of(terms, extras)


def _named(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A name (``MON``) or a range of names (``MON-FRI``)."""
    return st.one_of(
        st.sampled_from(names),
        st.tuples(st.integers(0, len(names) - 1), st.integers(0, len(names) - 1)).map(
            lambda ab: f"{names[min(ab)]}-{names[max(ab)]}"
        ),
    )


_day_extras = st.sampled_from(["L", "LW"])
_dow_extras = st.one_of(
    _named(DAY_NAMES),
    st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda dk: f"{dk[0]}#{dk[1]}"),
    st.integers(0, 7).map(lambda d: f"{d}L"),
)


@st.composite
def cron_expressions(draw: st.DrawFn, *, seconds: bool | None = None) -> str:
    """A cron expression: 5 fields, 6 with leading seconds, or an ``@`` shortcut.

    The minute and hour fields lean towards small explicit values (the fixed-time
    expressions DST treats specially) and towards the 00-04 hours where changes happen.
    May produce an expression ``Cron`` refuses (``0 0 31 2 *``); callers filter those.
    """
    if seconds is None and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(SHORTCUTS))
    hour = st.one_of(cron_field(0, 23), cron_field(0, 4))
    fields = [
        draw(cron_field(0, 59)),
        draw(hour),
        draw(st.one_of(st.just("*"), cron_field(1, 31, _day_extras))),
        draw(st.one_of(st.just("*"), cron_field(1, 12, _named(MONTH_NAMES)))),
        draw(st.one_of(st.just("*"), cron_field(0, 7, _dow_extras))),
    ]
    with_seconds = draw(st.booleans()) if seconds is None else seconds
    if with_seconds:
        fields.insert(0, draw(cron_field(0, 59)))
    return " ".join(fields)


def aware_datetimes(
    lo: datetime = datetime(1990, 1, 1, tzinfo=UTC),
    hi: datetime = datetime(2040, 1, 1, tzinfo=UTC),
) -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes in ``[lo, hi)`` with microseconds (1990-2040 by default)."""
    span_us = (hi - lo) // timedelta(microseconds=1)
    return st.integers(0, span_us - 1).map(lambda us: lo + timedelta(microseconds=us))


#: Characters cron fields are made of, a few that look like them (Unicode digits and
#: spaces, fullwidth forms), and separators: text that reaches deep into a cron parser.
CRON_CHARS = "0123456789*/,-#?LW " + "¹²³١٢０\u2003\t" + "JANFEBMONSUTHD" + "@"
cron_words = st.one_of(
    st.text(alphabet=CRON_CHARS, min_size=1, max_size=8),
    st.sampled_from([*SHORTCUTS, "@reboot", *MONTH_NAMES, *DAY_NAMES, "L", "LW", "5L", "1#5"]),
    st.integers(-99, 99).map(str),
)
#: cron-like expressions: 1 to 8 words of cron-like text, joined by spaces
cron_like = st.lists(cron_words, min_size=1, max_size=8).map(" ".join)
