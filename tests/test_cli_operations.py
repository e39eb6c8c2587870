"""``tickwork retry ID`` and ``tickwork cron run-now ID``: the CLI as a store client."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import error_line, tw
from tests.support.cli import tw_cmd as tw_cron


def test_retry_an_aborted_instance(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    iid = int(tw(db, "add", "--in", "1h", "--", "echo", "hi").stdout)
    out = tw(db, "retry", str(iid), code=1)
    assert "only a FAILED, ABORTED or MISSED instance can be retried" in error_line(out)
    tw(db, "abort", str(iid))
    done = json.loads(tw(db, "retry", str(iid), "--json").stdout)
    assert done["retry_of"] == iid
    assert done["task"] == "bash"
    new = done["id"]
    shown = json.loads(tw(db, "show", str(new), "--json").stdout)
    assert shown["state"] == "PENDING"
    assert shown["params"] == {"cmd": "echo hi", "cwd": str(Path.cwd())}
    again = tw(db, "retry", str(iid)).stdout
    assert again.strip() == f"retrying {iid} (bash, ABORTED) as {new}"
    assert "no instance with id 999" in error_line(tw(db, "retry", "999", code=1))
    tw(db, "retry", "x", code=2)


def test_cron_run_now(tmp_path: Path) -> None:
    db = tmp_path / "cron.db"
    tw_cron("cron", "add", "0 0 1 1 *", "--id", "yearly", "--", "echo", "hi", db=db)
    done = json.loads(tw_cron("cron", "run-now", "yearly", "--json", db=db).stdout)
    assert done["schedule_id"] == "yearly"
    shown = json.loads(tw(db, "show", str(done["id"]), "--json").stdout)
    assert shown["state"] == "PENDING"
    assert shown["params"] == {"cmd": "echo hi"}
    assert (shown["run_now_of"], shown["schedule_id"], shown["retry_of"]) == ("yearly", None, None)
    text = tw_cron("cron", "run-now", "yearly", db=db).stdout.strip()
    assert text == f"running yearly now as instance {done['id'] + 1}"
    missing = tw_cron("cron", "run-now", "nope", db=db, code=1)
    assert "no schedule with id 'nope'" in error_line(missing)
