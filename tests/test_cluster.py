"""Clustering over PostgreSQL with real node processes (``tests/support/cluster_node.py``).

Real processes, the real clock and a real server: these tests are about processes dying,
sessions being cut and nodes talking through the database. Leases are short (2 s) so a
takeover takes seconds; every wait is bounded. Each test gets a fresh schema.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
import pytest
import trio
from psycopg import conninfo

import tickwork
from tests.support.pg_support import drop_schema, fresh_schema, require_pg
from tickwork._time import from_us
from tickwork.model import NewRow
from tickwork.state import State
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NODE = Path(__file__).parent / "support" / "cluster_node.py"
LEASE = 2.0
S = 1_000_000


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


class Node:
    """A node process and its run log."""

    def __init__(self, dsn: str, schema: str, node_id: str, tmp: Path, **opts: float) -> None:
        self.node_id = node_id
        self.log = tmp / f"{node_id}.log"
        argv = [sys.executable, str(NODE), "--dsn", dsn, "--schema", schema]
        argv += ["--node-id", node_id, "--log", str(self.log), "--lease", str(LEASE)]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        pytest.fail(f"node {self.node_id} did not start:\n{err[-3000:]}")

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.proc.communicate(timeout=10)
        return at

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait, and return the statistics it printed."""
        import json

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        for line in out.splitlines():
            if line.startswith("STATS "):
                return dict(json.loads(line[len("STATS ") :]))
        pytest.fail(f"node {self.node_id} printed no statistics:\n{err[-3000:]}")

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
        self.proc.wait(10)


def events(*nodes: Node) -> list[tuple[str, str, str, float]]:
    """Every ``(event, label, node, time)`` the nodes logged."""
    out = []
    for node in nodes:
        if node.log.exists():
            for line in node.log.read_text().splitlines():
                event, label, who, at = line.split()
                out.append((event, label, who, float(at)))
    return out


def starts(node: Node) -> list[float]:
    """When ``node`` started each run (its log's "S" events)."""
    return [at for event, _, _, at in events(node) if event == "S"]


def running_at_least_once(node: Node) -> int:
    """How many at-least-once runs ``node`` has started and not finished (its log)."""
    open_runs: set[str] = set()
    for event, label, _, _ in events(node):
        if int(label) % 10:  # every tenth is at-most-once
            if event == "S":
                open_runs.add(label)
            elif event == "D":
                open_runs.discard(label)
    return len(open_runs)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def insert(dsn: str, schema: str, rows: list[NewRow]) -> list[int]:
    async def go() -> list[int]:
        store = PostgresStore(dsn, schema=schema)
        await store.open()
        try:
            return await store.insert(rows, time.time_ns() // 1000)
        finally:
            await store.aclose()

    return trio.run(go)


def create_schema(dsn: str, schema: str) -> None:
    insert(dsn, schema, [])


def held_by(dsn: str, schema: str, node_id: str) -> int:
    [(n,)] = sql(
        dsn,
        f"SELECT count(*) FROM {schema}.claims c JOIN {schema}.instances i "
        "ON i.claim_token = c.token AND i.state IN (1, 2) WHERE c.owner = %s",
        node_id,
    )
    return int(n)


def ended(dsn: str, schema: str) -> int:
    [(n,)] = sql(dsn, f"SELECT count(*) FROM {schema}.instances WHERE state >= 3")
    return int(n)


# -- three nodes, one SIGKILL -------------------------------------------------------------

N = 20_000


Runs = dict[str, list[tuple[str, float]]]  # label -> (node, start time) of each run


def test_three_nodes_share_the_work_and_survive_a_sigkill(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    dsn, schema = pg
    create_schema(dsn, schema)
    # Runs of 0.2 s: every node always has some in flight.
    nodes = [Node(dsn, schema, f"n{i}", tmp_path, horizon=1.0, work_s=0.2) for i in range(3)]
    try:
        for node in nodes:
            node.wait_ready()
        time.sleep(LEASE / 2)  # a heartbeat each: every node knows how many share the work
        # 20,000 instances due over 5 s, every tenth at-most-once.
        start = time.time_ns() // 1000 + S
        rows = [
            NewRow(
                task="once" if i % 10 == 0 else "work",
                run_at_us=start + i * 5 * S // N,
                params=str(i).encode(),
            )
            for i in range(N)
        ]
        ids = insert(dsn, schema, rows)
        # kill one node mid-run, while it has work claimed and running
        wait(lambda: ended(dsn, schema) >= N * 11 // 20, 30, "the run to get going")
        victim, survivors = nodes[0], nodes[1:]
        # kill it while at-least-once runs are in flight there (runs take 0.2 s)
        wait(lambda: running_at_least_once(victim) > 0, 10, "runs in flight on the victim")
        assert held_by(dsn, schema, victim.node_id) > 0
        killed_at = victim.kill()
        wait(lambda: held_by(dsn, schema, victim.node_id) == 0, 10, "the takeover")
        takeover_s = time.monotonic() - killed_at
        wait(lambda: ended(dsn, schema) == N, 40, "every instance to end")
        stats = [node.stop() for node in survivors]
    finally:
        for node in nodes:
            node.ensure_dead()

    # the survivors took over within one lease (plus a little for a busy machine)
    assert takeover_s <= LEASE + 1.5, takeover_s
    starts: Runs = defaultdict(list)
    for event, label, who, at in events(*nodes):
        if event == "S":
            starts[label].append((who, at))
    # A survivor whose own lease lapsed on a starved machine (its outcomes then refused,
    # fenced out) lost its runs in flight as the victim did; on an idle machine, none does.
    lapsed = {s["node"] for s in stats if s["lost_claims"] or s["refused"]}
    check_runs(
        dsn, schema, {iid: str(i) for i, iid in enumerate(ids)}, starts, killed_at, lapsed=lapsed
    )
    # a fair share each, while all three ran
    before = Counter(who for runs in starts.values() for who, at in runs if at < killed_at)
    total = sum(before.values())
    assert total > 1000
    for node in nodes:  # a third each on an idle machine; allow for a busy one
        assert before[node.node_id] >= total * 0.15, before
    # and the survivors did the rest between them (unevenly while the dead node still
    # counts as alive: its pull slots fall to the node after it)
    after = Counter(who for runs in starts.values() for who, at in runs if at >= killed_at)
    assert set(after) == {"n1", "n2"}, after
    # batching: well under one commit per instance on each survivor
    for s in stats:
        assert s["commits"] < 0.1 * N, s


def check_runs(
    dsn: str,
    schema: str,
    label_of: dict[int, str],
    starts: Runs,
    killed_at: float,
    *,
    lapsed: set[str],
) -> None:
    """Every instance ended right, and only those in flight on the killed node (or on a
    node in ``lapsed``, whose lease lapsed: see its stats) ran twice."""

    def lost_there(who: str, at: float) -> bool:
        return (who == "n0" and at < killed_at) or who in lapsed

    final = dict(sql(dsn, f"SELECT id, state FROM {schema}.instances"))
    errors = dict(sql(dsn, f"SELECT id, error FROM {schema}.instances WHERE state = 4"))
    recorded_by_victim = {
        r[0] for r in sql(dsn, f"SELECT instance_id FROM {schema}.history WHERE node = 'n0'")
    }
    twice = 0
    for iid, label in label_of.items():
        runs = sorted(starts.get(label, []), key=lambda r: r[1])
        if int(label) % 10:  # at-least-once: succeeded, maybe twice
            assert final[iid] == State.SUCCEEDED, (label, final[iid], runs)
            assert runs, label
        else:  # at-most-once: never twice; FAILED only if started on the killed node
            assert len(runs) <= 1, (label, runs)
            if final[iid] != State.SUCCEEDED:  # (durably RUNNING there: maybe not begun)
                assert (final[iid], errors[iid]) == (State.FAILED, INTERRUPTED)
                assert all(lost_there(who, at) for who, at in runs), (runs, lapsed)
        if len(runs) > 1:
            # in flight on the killed node at the kill: run there before the kill, its
            # outcome never recorded, then run once elsewhere
            twice += 1
            assert len(runs) == 2, (label, runs)
            assert lost_there(*runs[0]), (label, runs, lapsed)
            assert runs[1][0] != "n0"
            if runs[0][0] == "n0":
                assert iid not in recorded_by_victim
    assert twice  # the kill really hit work in flight (else nothing was tested)


# -- a node cut off from the database -------------------------------------------------------


@pytest.fixture
def node_role(pg: tuple[str, str]) -> Iterator[str]:
    """A login role that owns the test schema (its connections can be cut and refused)."""
    dsn, schema = pg
    role = f"tw_cut_{uuid.uuid4().hex[:10]}"
    sql(dsn, f"CREATE ROLE {role} LOGIN")
    sql(dsn, f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    try:
        yield role
    finally:
        sql(dsn, f"ALTER ROLE {role} CONNECTION LIMIT -1")
        sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role)
        drop_schema(dsn, schema)
        sql(dsn, f"DROP ROLE IF EXISTS {role}")


def test_a_node_cut_off_stops_starting_and_its_late_writes_are_refused(
    pg: tuple[str, str], node_role: str, tmp_path: Path
) -> None:
    dsn, schema = pg
    cut_dsn = conninfo.make_conninfo(dsn, user=node_role)
    # Its horizon is longer than its lease: it claims work due after the lease would lapse.
    cut = Node(cut_dsn, schema, "cut", tmp_path, horizon=8.0, slow_s=1.5)
    rescuer: Node | None = None
    try:
        cut.wait_ready()
        now = time.time_ns() // 1000
        early = [NewRow("slow", now + 1 * S, f"e{i}".encode()) for i in range(5)]
        late = [NewRow("slow", now + 6 * S, f"l{i}".encode()) for i in range(5)]
        ids = insert(dsn, schema, early + late)
        wait(lambda: held_by(dsn, schema, "cut") == 10, 5, "the node to claim everything")
        wait(lambda: sum(e == "S" for e, *_ in events(cut)) == 5, 5, "the early ones to start")
        # Cut it off: its sessions end and it cannot open new ones.
        sql(dsn, f"ALTER ROLE {node_role} CONNECTION LIMIT 0")
        sql(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            node_role,
        )
        cut_at = time.monotonic()
        rescuer = Node(dsn, schema, "rescuer", tmp_path, horizon=1.0, slow_s=0.1)
        rescuer.wait_ready()
        # the rescuer takes over once the lease lapses, and runs everything
        wait(lambda: ended(dsn, schema) == 10, 20, "the rescuer to finish the work")
        # let the cut node back in: it records what it ran meanwhile, and is refused
        sql(dsn, f"ALTER ROLE {node_role} CONNECTION LIMIT -1")
        time.sleep(LEASE)
        cut_stats = cut.stop()
        rescuer.stop()
    finally:
        cut.ensure_dead()
        if rescuer is not None:
            rescuer.ensure_dead()

    log = events(cut)
    cut_starts = {label: at for event, label, _, at in log if event == "S"}
    cut_done = {label for event, label, _, _ in log if event == "D"}
    # it ran the early ones (already running at the cut) to the end...
    assert set(cut_starts) == {f"e{i}" for i in range(5)}
    assert cut_done == set(cut_starts)
    # ...but started nothing once its lease could have lapsed: not one late instance
    assert all(at < cut_at + LEASE for at in cut_starts.values())
    # its late outcome writes were refused: the rescuer had taken the claims over
    assert cut_stats["refused"] >= 10, cut_stats
    history = sql(dsn, f"SELECT instance_id, node FROM {schema}.history")
    assert {node for _, node in history} == {"rescuer"}
    states = sql(dsn, f"SELECT state FROM {schema}.instances WHERE id = ANY(%s)", ids)
    assert [s for (s,) in states] == [State.SUCCEEDED] * 10


# -- signals across nodes ---------------------------------------------------------------------


def test_abort_on_one_node_cancels_the_run_on_another(pg: tuple[str, str], tmp_path: Path) -> None:
    dsn, schema = pg
    create_schema(dsn, schema)
    runner = Node(dsn, schema, "runner", tmp_path, horizon=5.0, slow_s=30)
    try:
        runner.wait_ready()
        now = time.time_ns() // 1000
        [running, waiting] = insert(
            dsn, schema, [NewRow("slow", now, b"r"), NewRow("slow", now + 3 * S, b"w")]
        )
        wait(lambda: any(e == "S" for e, *_ in events(runner)), 10, "the run to start")
        # an at-least-once run in progress shows RUNNING with the Recorder's next batch
        wait(
            lambda: (
                sql(dsn, f"SELECT state FROM {schema}.instances WHERE id = %s", running)
                == [(State.RUNNING,)]
            ),
            10,
            "RUNNING in the store",
        )

        async def abort_from_another_node() -> tuple[list[State], float]:
            store = PostgresStore(dsn, schema=schema)
            async with tickwork.open_scheduler(store, node_id="other") as other:
                t0 = time.monotonic()
                states = [await other.abort(running), await other.abort(waiting)]
                with trio.fail_after(5):
                    while {(await other.get(i)).state for i in (running, waiting)} != {
                        State.ABORTED
                    }:
                        await trio.sleep(0.02)
                return states, time.monotonic() - t0

        states, took = trio.run(abort_from_another_node)
        runner.stop()
    finally:
        runner.ensure_dead()
    # held by the runner (one RUNNING, one CLAIMED until its time): the abort was
    # requested, and the runner carried it out
    assert states == [State.RUNNING, State.CLAIMED]
    assert took < 5.0  # a notice: the runner holds both for 30 s and nobody polls
    aborted = [label for event, label, *_ in events(runner) if event == "A"]
    assert sorted(aborted) == ["r", "w"]
    assert not any(e == "D" for e, *_ in events(runner))  # the run was cancelled


# -- one process: notices, the horizon, restarts, the command line ---------------------------


async def run_soon(dsn: str, schema: str, coro: Callable[[tickwork.Scheduler], Any]) -> Any:
    """Run ``coro(scheduler)`` on a node of its own on the schema (lease 2 s)."""
    store = PostgresStore(dsn, schema=schema)
    async with tickwork.open_scheduler(
        store,
        tasks=[Quick()],
        node_id="solo",
        lease=timedelta(seconds=LEASE),
        poll_interval=timedelta(seconds=30),
        claim_horizon=timedelta(seconds=1),
    ) as scheduler:
        return await coro(scheduler)


class Quick(tickwork.Task):
    name = "quick"
    started: ClassVar[list[tuple[bytes, float]]] = []

    async def run(self, params: bytes) -> None:
        Quick.started.append((params, trio.current_time()))


async def client_insert(dsn: str, schema: str, rows: list[NewRow]) -> list[int]:
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        return await store.insert(rows, time.time_ns() // 1000)
    finally:
        await store.aclose()


async def test_work_added_elsewhere_wakes_a_node_at_once(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    Quick.started.clear()

    async def go(scheduler: tickwork.Scheduler) -> float:
        await trio.sleep(0.3)  # idle: nothing pending, no polling (every 30 s)
        t0 = trio.current_time()
        await client_insert(dsn, schema, [NewRow("quick", time.time_ns() // 1000, b"x")])
        with trio.fail_after(5):
            while not Quick.started:
                await trio.sleep(0.005)
        assert scheduler.statistics().cluster is not None
        return Quick.started[0][1] - t0

    latency = await run_soon(dsn, schema, go)
    assert latency < 1.5  # a notice (milliseconds when idle), not the 30 s poll


async def test_a_cluster_node_claims_only_within_its_horizon(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    Quick.started.clear()

    async def go(scheduler: tickwork.Scheduler) -> None:
        t0 = trio.current_time()
        due = time.time_ns() // 1000 + 4 * S
        await scheduler.schedule_many(
            [tickwork.NewInstance("quick", from_us(due), str(i).encode()) for i in range(5)]
        )
        await trio.sleep(1.0)  # due in 3 s: beyond the 1 s horizon, so not claimed yet
        assert await scheduler.count(state=State.PENDING) == 5
        assert scheduler.statistics().in_memory == 0
        with trio.fail_after(10):
            while len(Quick.started) < 5:
                await trio.sleep(0.01)
        assert all(at - t0 >= 3.9 for _, at in Quick.started)  # on time, not early

    await run_soon(dsn, schema, go)


async def test_a_node_restarted_under_its_id_gets_its_old_claims_back(
    pg: tuple[str, str],
) -> None:
    dsn, schema = pg
    Quick.started.clear()
    now = time.time_ns() // 1000
    ids = await client_insert(dsn, schema, [NewRow("quick", now, b"a"), NewRow("quick", now, b"b")])
    # a previous run of node "solo" claimed them with a long lease, then died
    store = PostgresStore(dsn, schema=schema)
    await store.open(node_id="solo")
    assert len(await store.claim("solo", now, 10, now, 600 * S)) == 2
    await store.aclose()

    async def go(scheduler: tickwork.Scheduler) -> None:
        with trio.fail_after(5):  # not after the 10-minute lease: at once
            while {(await scheduler.get(i)).state for i in ids} != {State.SUCCEEDED}:
                await trio.sleep(0.05)

    await run_soon(dsn, schema, go)
    assert sorted(p for p, _ in Quick.started) == [b"a", b"b"]


async def test_the_command_line_takes_a_postgresql_uri(pg: tuple[str, str]) -> None:
    import json

    dsn, schema = pg
    db = f"{dsn}?schema={schema}"

    async def cli(*args: str) -> Any:
        env = {**os.environ, "TICKWORK_DB": db}
        done = await trio.run_process(
            [sys.executable, "-m", "tickwork", *args, "--json"],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    async def go(scheduler: tickwork.Scheduler) -> None:
        added = await cli("add", "--task", "quick", "--in", "0")
        with trio.fail_after(10):
            while (await cli("show", str(added["id"])))["state"] != "SUCCEEDED":
                await trio.sleep(0.1)
        listed = await cli("ls")
        assert [i["id"] for i in listed] == [added["id"]]
        stats = await cli("stats")
        assert stats["counts"]["SUCCEEDED"] == 1
        assert stats["db_size_bytes"] is None
        nodes = await cli("nodes")
        assert [(n["node_id"], n["state"]) for n in nodes] == [("solo", "alive")]
        assert nodes[0]["held"] == 0
        assert nodes[0]["pid"] == os.getpid()

    await run_soon(dsn, schema, go)


def test_a_schedule_paused_on_one_node_is_not_fired_by_another(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    dsn, schema = pg
    create_schema(dsn, schema)
    here: list[float] = []

    class Work(tickwork.Task):  # the same task as the runner's, run here too
        name = "work"

        async def run(self, params: bytes) -> None:
            here.append(time.monotonic())

    runner = Node(dsn, schema, "runner", tmp_path, horizon=1.0, work_s=0.01)
    try:
        runner.wait_ready()

        async def go() -> float:
            store = PostgresStore(dsn, schema=schema)
            async with tickwork.open_scheduler(
                store, tasks=[Work()], node_id="other", claim_horizon=timedelta(seconds=1)
            ) as other:
                sid = await other.add_schedule(
                    "work", tickwork.Interval(timedelta(milliseconds=500)), params=b"p"
                )
                # Both nodes run occurrences before the pause (whichever pulls first
                # takes the next one: wait until the runner has had its turn too).
                with trio.fail_after(15):
                    while len(here) + len(events(runner)) < 4 or not starts(runner):
                        await trio.sleep(0.05)
                await other.pause_schedule(sid)
                paused_at = time.monotonic()
                await trio.sleep(2.5)  # five fire times while paused
                return paused_at

        paused_at = trio.run(go)
        runner.stop()
    finally:
        runner.ensure_dead()
    ran_there = starts(runner)
    assert ran_there  # the other node really ran occurrences before the pause
    assert [at for at in ran_there + here if at > paused_at + 0.05] == []


def test_tickwork_run_joins_a_cluster_from_the_command_line(pg: tuple[str, str]) -> None:
    import json

    dsn, schema = pg
    env = {**os.environ, "TICKWORK_DB": f"{dsn}?schema={schema}"}

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "tickwork", args[0], "--json", *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    node = subprocess.Popen(
        [sys.executable, "-m", "tickwork", "run", "--node-id", "cli-node", "--lease", "3s"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait(lambda: [n["node_id"] for n in cli("nodes")] == ["cli-node"], 20, "the node")
        added = cli("add", "--in", "0", "--", "true")
        wait(lambda: cli("show", str(added["id"]))["state"] == "SUCCEEDED", 20, "the run")
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=30)
        assert node.returncode == 0, err
        [gone] = cli("nodes", "--all")
        assert (gone["node_id"], gone["state"], gone["held"]) == ("cli-node", "stopped", 0)
    finally:
        if node.poll() is None:
            node.kill()
        node.communicate(timeout=10)
