"""The CLI checks new work against what the nodes run (items 9 and 10 of issue 11).

``add --task nosuch`` and ``cron add --task report`` used to be accepted, and every run
then failed "unknown task". Nodes record their tasks and params limit in the store; the
CLI refuses a task no live node runs (exit 2, naming the tasks they do run) unless
``--force``; with no node live, the last node's tasks decide; with none ever recorded,
the work is accepted with a warning. Params over the nodes' limit are refused.
"""

from __future__ import annotations

import json
import signal
import textwrap
from typing import TYPE_CHECKING

from tests.support.cli import Node, error_line, tw

if TYPE_CHECKING:
    from pathlib import Path

REPORT = """
    import tickwork

    class Report(tickwork.Task):
        name = "report"

        async def run(self, params: bytes) -> object:
            return "done"
"""


def test_a_task_no_node_runs_is_refused_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "mytasks.py").write_text(textwrap.dedent(REPORT))
    db = tmp_path / "t.db"
    # no node ever ran here: nothing to check against, so it is accepted, with a warning
    fresh = tw(db, "add", "--task", "anything", "--in", "1h")
    assert "no node has run on this database yet" in fresh.stderr

    with Node(db, "--tasks", "mytasks:Report", "--max-params", "300", cwd=tmp_path) as node:
        node.wait_for(f"started on {db}")
        line = error_line(tw(db, "add", "--task", "nosuch", "--in", "1h", code=2))
        assert "Invalid value for '--task'" in line, line
        # (the line names the tasks they run: the built-in ones and report)
        assert "no live node runs task 'nosuch' (the live nodes run: " in line
        assert "report" in line
        assert "--force" in line
        line = error_line(
            tw(None, "cron", "add", "--db", str(db), "--task", "reprot", "@daily", code=2)
        )
        assert "no live node runs task 'reprot'" in line, line
        tw(db, "add", "--task", "report", "--in", "1h")
        tw(None, "cron", "add", "--db", str(db), "--task", "report", "@daily")
        forced = tw(db, "add", "--task", "nosuch", "--in", "1h", "--force")
        assert "added anyway (--force)" in forced.stderr

        # the node's params limit (300 bytes) is the CLI's
        line = error_line(tw(db, "add", "--in", "1h", "--", "echo", "x" * 400, code=2))
        assert "Invalid value for '--params'" in line, line
        assert "over the limit of 300 bytes" in line, line
        crontab = tmp_path / "crontab"
        crontab.write_text(f"0 1 * * * echo short\n0 2 * * * echo {'y' * 400}\n")
        line = error_line(tw(None, "cron", "import", "--db", str(db), str(crontab), code=2))
        assert "Invalid value for line 2" in line, line
        assert (
            json.loads(tw(None, "cron", "ls", "--db", str(db), "--json").stdout)[0]["task"]
            == "report"
        )

        nodes = json.loads(tw(db, "nodes", "--json").stdout)
        assert [(n["state"], n["max_params_bytes"]) for n in nodes] == [("alive", 300)]
        assert {"bash", "report"} <= set(nodes[0]["tasks"])
        assert node.stop(signal.SIGTERM) == 0, node.log

    # no node is running: the last one's tasks still decide
    line = error_line(tw(db, "add", "--task", "nosuch", "--in", "1h", code=2))
    assert "no node is running, and the last one" in line, line
    assert "(it ran: " in line, line
    tw(db, "add", "--task", "report", "--in", "1h")
    [stopped] = json.loads(tw(db, "nodes", "--json", "--all").stdout)
    assert stopped["state"] == "stopped"


def test_bad_leases_and_horizons_are_usage_errors(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    line = error_line(tw(db, "run", "--lease", "1ms", code=2))
    assert "Invalid value for '--lease'" in line, line
    assert "at least 1s" in line, line
    line = error_line(tw(db, "run", "--claim-horizon", "2h", code=2))
    assert "Invalid value for '--claim-horizon'" in line, line
    assert "must not be longer than --window (1h)" in line, line
    line = error_line(tw(db, "run", "--max-params", "0", code=2))
    assert "Invalid value for '--max-params'" in line, line
    assert not db.exists()  # refused before anything was opened
