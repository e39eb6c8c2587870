"""Values at Python's limits (huge ids, durations, years, counts) are refused at the CLI
like any other bad value: exit status 2 and one ``error:`` line naming the option, never
"unexpected OverflowError" from deep inside.

Every case runs in one child process (``main()`` called once per case, its stderr
captured), so the sweep costs one interpreter start.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from tickwork import Cron, Interval, NewInstance, Task
from tickwork._time import MAX_DURATION, MAX_US, td_us
from tickwork.actors._outcomes import backoff_us
from tickwork.errors import InvalidArgument
from tickwork.model import validate_new
from tickwork.schedules.schedule import new_schedule

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_NOW = datetime(2026, 1, 1, tzinfo=UTC)

BIG = "99999999999999999999999"
INT64_PAST = str(2**63)
#: (case id, argv without --db, a piece of the error line)
CASES = [
    ("show-huge-id", ["show", BIG], "instance ids are positive integers up to"),
    ("show-int64+1", ["show", INT64_PAST], "instance ids are positive integers up to"),
    ("abort-huge-id", ["abort", BIG], "instance ids are positive integers up to"),
    ("ls-before-huge-id", ["ls", "--before-id", BIG], "'--before-id'"),
    ("retry-huge-id", ["retry", BIG], "instance ids are positive integers up to"),
    ("logs-huge-id", ["logs", BIG], "instance ids are positive integers up to"),
    ("add-in-99999999d", ["add", "--in", "99999999d", "--", "echo"], "too long"),
    ("add-in-past-9999", ["add", "--in", "3000000d", "--", "echo"], "past year 9999"),
    ("add-at-past-9999", ["add", "--at", "9999-12-31T23:59:59-14:00", "--", "echo"], "9999"),
    ("add-at-before-1", ["add", "--at", "0001-01-01T00:00:00+14:00", "--", "echo"], "9999"),
    ("add-attempts-huge", ["add", "--in", "1s", "--max-attempts", BIG, "--", "x"], "attempts"),
    ("add-attempts-2^31", ["add", "--in", "1s", "--max-attempts", str(2**31), "--", "x"], "1<="),
    ("add-timeout-huge", ["add", "--in", "1s", "--timeout", "999999999d", "--", "x"], "too long"),
    (
        "add-params-huge-int",
        ["add", "--in", "1s", "--task", "t", "--params", BIG],
        "'--params'",
    ),
    ("cron-grace", ["cron", "add", "* * * * *", "--grace", "999999999d", "--", "x"], "too long"),
    ("cron-jitter", ["cron", "add", "* * * * *", "--jitter", "999999999d", "--", "x"], "too long"),
    (
        "cron-start",
        ["cron", "add", "* * * * *", "--start", "9999-12-31T23:59:59-14:00", "--", "x"],
        "9999",
    ),
    (
        "cron-end",
        ["cron", "add", "* * * * *", "--end", "0001-01-01T00:00:00+14:00", "--", "x"],
        "9999",
    ),
    ("cron-next-after", ["cron", "next", "@daily", "--after", "9999-12-31T23:59-14:00"], "9999"),
    ("cron-import-grace", ["cron", "import", "--grace", "999999999d", "-"], "too long"),
    ("run-window", ["run", "--window", "999999999d"], "too long"),
    ("run-lease", ["run", "--lease", "999999999d"], "too long"),
    ("run-shutdown-grace", ["run", "--shutdown-grace", "999999999d"], "too long"),
    ("run-user-call-retry", ["run", "--user-call-retry", "999999999d"], "too long"),
    ("run-retention", ["run", "--retention", "999999999d"], "too long"),
    ("run-claim-horizon", ["run", "--claim-horizon", "999999999d"], "too long"),
]

# A case that wrongly starts a node (`run` with a value it should refuse) is ended by
# SIGALRM after a few seconds and reported as whatever error that makes.
_DRIVER = """
import contextlib, io, json, signal, sys
from tickwork.cli import main

def too_long(*_):
    raise TimeoutError("the command did not refuse its value: it ran")

signal.signal(signal.SIGALRM, too_long)
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        signal.alarm(5)
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
        finally:
            signal.alarm(0)
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    db = tmp_path_factory.mktemp("limits") / "limits.db"
    argvs = [["add", "--db", str(db), "--in", "1h", "--", "true"]]  # a database to read
    for _, argv, _ in CASES:
        at = 2 if argv[0] == "cron" else 1
        db_args = [] if argv[:2] == ["cron", "next"] else ["--db", str(db)]
        argvs.append([*argv[:at], *db_args, *argv[at:]])
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        input="",
    )
    setup, *answers = json.loads(proc.stdout)
    assert setup[0] == 0, setup
    return {case: (code, err) for (case, _, _), (code, err) in zip(CASES, answers, strict=True)}


@pytest.mark.parametrize(("case", "argv", "piece"), CASES, ids=[c[0] for c in CASES])
def test_a_value_past_the_limits_is_a_usage_error(
    results: dict[str, tuple[int, str]], case: str, argv: list[str], piece: str
) -> None:
    code, err = results[case]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("error: "), err
    assert "unexpected" not in err
    assert piece in lines[0], lines[0]
    assert code == 2, (argv, code, err)


def test_the_largest_values_still_work(tmp_path: Path) -> None:
    """At the limits, not past them: stored, read back, shown."""
    db = tmp_path / "edge.db"

    def tw(*argv: str, code: int = 0) -> str:
        at = 2 if argv[0] == "cron" else 1
        full = [sys.executable, "-m", "tickwork", *argv[:at], "--db", str(db), *argv[at:]]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == code, proc.stderr
        return proc.stdout

    iid = tw("add", "--at", "9999-12-31T23:59:59Z", "--max-attempts", str(2**31 - 1),
             "--timeout", "3652058d", "--", "echo").strip()  # fmt: skip
    doc = json.loads(tw("show", iid, "--json"))
    assert doc["run_at"].startswith("9999-12-31T23:59:59")
    assert doc["max_attempts"] == 2**31 - 1
    tw("show", str(2**63 - 1), code=1)  # the largest id is an id: there is none such
    tw("cron", "add", "@daily", "--grace", "3652058d", "--jitter", "3652058d",
       "--start", "9999-01-01T00:00Z", "--", "x")  # fmt: skip


# -- the same limits at the API, where the CLI's values end up --------------------------------

_PAST_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
_TOO_LONG = MAX_DURATION + timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("call", "piece"),
    [
        (lambda: validate_new(NewInstance("t", _PAST_9999)), "outside years 1-9999"),
        (lambda: validate_new(NewInstance("t", _NOW, max_attempts=2**31)), "max_attempts"),
        (lambda: validate_new(NewInstance("t", _NOW, timeout=_TOO_LONG)), "timeout"),
        (lambda: new_schedule("t", Cron("@daily"), grace=_TOO_LONG), "grace"),
        (lambda: new_schedule("t", Cron("@daily"), jitter=_TOO_LONG), "jitter"),
        (lambda: new_schedule("t", Cron("@daily"), end_at=_PAST_9999), "end_at"),
        (lambda: Interval(_TOO_LONG), "interval every"),
        (lambda: Cron("@daily").next_after(_PAST_9999), "outside years 1-9999"),
    ],
)
def test_the_api_refuses_values_past_the_limits(call: Callable[[], object], piece: str) -> None:
    with pytest.raises(InvalidArgument, match=piece):
        call()


def test_the_api_takes_values_at_the_limits() -> None:
    row = validate_new(NewInstance("t", datetime.max.replace(tzinfo=UTC), max_attempts=2**31 - 1,
                                   timeout=MAX_DURATION))  # fmt: skip
    assert row.run_at_us == MAX_US
    assert Interval(MAX_DURATION).next_after_us(0) == td_us(MAX_DURATION)


class _Retried(Task):
    name = "retried"


def test_backoff_after_thousands_of_attempts() -> None:
    # 2 ** 1024 does not convert to float: the Recorder raised OverflowError here
    delay = backoff_us(_Retried(), 5000, random.Random(1))  # noqa: S311 - backoff jitter
    assert 0 <= delay <= td_us(_Retried.backoff_cap)
