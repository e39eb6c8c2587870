"""Hand-off throughput: N instances due at once, each handed to a webhook receiver, Redis,
NATS JetStream or RabbitMQ, from ``schedule_many`` to N SUCCEEDED; beside the no-op fire
rate of the same run.

For each repetition, one trio run, a fresh SQLite store (the durable default) and node
per kind (``open_scheduler`` defaults: ``max_concurrency`` 1,000), with the real servers
on loopback:

- ``noop``: a task that returns at once (the node's own limit in this run);
- ``webhook``: POST of a small JSON body to a local receiver (``benchmarks/_receiver.py``,
  another process, keep-alive connections), unsigned and signed;
- ``redis``: XADD to a stream (pipelined batches on one connection);
- ``nats``: JetStream publish, each waiting for its ack (pipelined on one connection);
- ``amqp``: persistent publish to a durable queue, publisher confirms awaited together
  (for reference: the issue sets no target).

Every hand-off is checked at the other end afterwards (the receiver's count, XLEN, the
stream's and the queue's message counts). Reported: hand-offs per second, median
(min-max), the ratio to the no-op rate of the same repetition, the CPU the node's
process used per second of the run (1.0 = one core busy: the node is the limit), and
that CPU per hand-off (less sensitive to what else runs on the machine).

Every instance has the same params unless ``--distinct`` (each one's payload carries its
number: a task that keeps checked params, as the nats task does, checks each twice then,
once when scheduled and once when run).

    python benchmarks/handoff.py [--quick] [--repeat 3] [-n 20000] [--only webhook,redis]
        [--distinct]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import trio

import tickwork
from _common import (
    BENCH_DIR,
    Stat,
    base_parser,
    check,
    cpu_seconds,
    emit_json,
    noop_task,
    open_node,
    print_table,
    ratio_stat,
    temp_dir,
    wait_recorded,
    write_result,
)
from tickwork.tasks import AmqpTask, NatsTask, RedisTask, WebhookTask
from tickwork.tasks._nats_client import connect

REDIS_URL = os.environ.get("TICKWORK_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TICKWORK_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("TICKWORK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a benchmark key
TARGETS = {"webhook": 5_000, "webhook signed": 5_000, "redis": 10_000, "nats": 10_000}
KINDS = ("noop", "webhook", "webhook signed", "redis", "nats", "amqp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """benchmarks/_receiver.py in a process of its own."""

    def __enter__(self) -> Self:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "_receiver.py"), str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    def count(self) -> int:
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"GET /count HTTP/1.1\r\nhost: x\r\n\r\n")
            return int(s.recv(65536).split(b"\r\n\r\n", 1)[1])

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


async def nats_api(subject: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        conn = await connect(NATS_URL, nursery)
        reply = await conn.request(subject, json.dumps(payload or {}).encode(), {}, 10.0)
        nursery.cancel_scope.cancel()
    return json.loads(reply.payload)  # type: ignore[no-any-return]


def amqp_queue(name: str, *, delete: bool = False) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        if delete:
            channel.queue_delete(name)
            return 0
        return int(channel.queue_declare(name, durable=True).method.message_count)
    finally:
        connection.close()


class Kind:
    """One kind of hand-off: its task, its params, and the check at the other end."""

    def __init__(self, name: str, receiver: Receiver | None, *, distinct: bool = False) -> None:
        self.name = name
        self.receiver = receiver
        self.distinct = distinct
        self.made = 0
        self.target = f"bench-{uuid.uuid4().hex[:8]}"
        self.before = 0

    @property
    def uses_receiver(self) -> bool:
        return self.receiver is not None and self.name.startswith("webhook")

    def task(self) -> tickwork.Task:
        if self.name == "noop":
            return noop_task()
        if self.name.startswith("webhook"):
            return WebhookTask(SECRET if self.name.endswith("signed") else None)
        return {"redis": RedisTask(REDIS_URL), "nats": NatsTask(NATS_URL),
                "amqp": AmqpTask(AMQP_URL)}[self.name]  # fmt: skip

    def params(self) -> object:
        payload: dict[str, object] = {"job": "report", "day": "2030-01-01"}
        if self.distinct:
            self.made += 1
            payload["n"] = self.made
        if self.name.startswith("webhook"):
            assert self.receiver is not None
            return {"url": self.receiver.url, "json": payload}
        if self.name == "redis":
            return {"stream": self.target, "fields": payload}
        if self.name == "nats":
            return {"subject": f"{self.target}.x", "json": payload}
        if self.name == "amqp":
            return {"routing_key": self.target, "json": payload}
        return b""

    async def set_up(self) -> None:
        if self.name.startswith("webhook"):
            assert self.receiver is not None
            self.before = self.receiver.count()
        elif self.name == "nats":
            config = {"name": self.target, "subjects": [f"{self.target}.>"]}
            await nats_api(f"$JS.API.STREAM.CREATE.{self.target}", config)
        elif self.name == "amqp":
            await trio.to_thread.run_sync(amqp_queue, self.target)

    async def delivered(self) -> int:
        """How many hand-offs arrived at the other end (then removes what they made)."""
        if self.name.startswith("webhook"):
            assert self.receiver is not None
            return self.receiver.count() - self.before
        if self.name == "redis":
            import coredis

            client = coredis.Redis.from_url(REDIS_URL)
            async with client:
                n = await client.xlen(self.target)
                await client.delete([self.target])
            return int(n)
        if self.name == "nats":
            info = await nats_api(f"$JS.API.STREAM.INFO.{self.target}")
            await nats_api(f"$JS.API.STREAM.DELETE.{self.target}")
            return int(info["state"]["messages"])
        if self.name == "amqp":
            n = await trio.to_thread.run_sync(amqp_queue, self.target)
            await trio.to_thread.run_sync(lambda: amqp_queue(self.target, delete=True))
            return n
        return -1


async def hand_off_once(kind: Kind, n: int, db: Path) -> dict[str, float]:
    task = kind.task()
    tasks = [task] if task.name == "noop" else [noop_task(), task]
    await kind.set_up()
    async with open_node(tickwork.SQLiteStore(db), tasks=tasks) as scheduler:
        news = [tickwork.NewInstance(task.name, datetime.now(UTC), kind.params()) for _ in range(n)]
        # the receiver is another process: its CPU is not the node's, but it shares the
        # machine's cores with the node
        receiver_pid = kind.receiver.proc.pid if kind.uses_receiver else None
        other0 = cpu_seconds(receiver_pid) if receiver_pid is not None else 0.0
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await scheduler.schedule_many(news)
        await wait_for_outcomes(scheduler, n)
        t1, cpu1 = time.perf_counter(), cpu_seconds()
        other1 = cpu_seconds(receiver_pid) if receiver_pid is not None else 0.0
        succeeded = await scheduler.count(state=tickwork.State.SUCCEEDED)
    if succeeded != n:
        raise RuntimeError(f"{kind.name}: {succeeded} of {n} SUCCEEDED")
    arrived = await kind.delivered()
    if kind.name != "noop" and arrived != n:
        raise RuntimeError(f"{kind.name}: {arrived} of {n} arrived at the other end")
    return {
        "rate": n / (t1 - t0),
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "receiver_us": (other1 - other0) / n * 1e6,
    }


async def wait_for_outcomes(scheduler: tickwork.Scheduler, n: int) -> None:
    """Until n outcomes are recorded (a failure would otherwise wait forever)."""
    counts: Callable[[], Any] = lambda: scheduler.statistics().counts  # noqa: E731
    while sum(counts().get(s, 0) for s in ("SUCCEEDED", "FAILED")) < n:
        await trio.sleep(0.002)
    await wait_recorded(scheduler, 0)


async def measure(
    kinds: list[str], n: int, repeat: int, tmpdir: str | None, distinct: bool = False
) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with Receiver() as receiver, temp_dir(tmpdir) as d:
        for rep in range(repeat):
            for name in kinds:
                kind = Kind(name, receiver, distinct=distinct)
                results[name].append(await hand_off_once(kind, n, d / f"{name}-{rep}.db"))
    return results


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="instances per measurement")
    parser.add_argument("--only", default=",".join(KINDS), help="kinds, comma-separated")
    parser.add_argument(
        "--distinct", action="store_true", help="other params for each instance (see above)"
    )
    args = parser.parse_args()
    n = 300 if args.quick else args.n
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if "noop" not in kinds:
        kinds.insert(0, "noop")
    results = trio.run(measure, kinds, n, args.repeat, args.tmpdir, args.distinct)
    noop = [r["rate"] for r in results["noop"]]
    rows, payload = [], {"n": n, "repeat": args.repeat, "distinct": args.distinct, "kinds": {}}
    notes: list[str] = []
    for name, runs in results.items():
        rate = Stat.of(r["rate"] for r in runs)
        cpu = Stat.of(r["cpu"] for r in runs)
        ratio = ratio_stat([r["rate"] for r in runs], noop)
        target = TARGETS.get(name)
        verdict = "" if target is None or args.quick else check(rate.median, target)
        per = Stat.of(r["cpu"] / r["rate"] * 1e6 for r in runs)
        rows.append([
            name, f"{rate.median:,.0f} ({rate.min:,.0f}-{rate.max:,.0f})",
            f"{ratio.median:.2f}", f"{cpu.median:.2f}", f"{per.median:,.0f}",
            "" if target is None else f">= {target:,}", verdict,
        ])  # fmt: skip
        payload["kinds"][name] = {
            "rate": rate.median, "rate_min": rate.min, "rate_max": rate.max,
            "ratio_to_noop": ratio.median, "node_cpu": cpu.median, "target": target,
            "node_cpu_us_per_handoff": per.median,
        }  # fmt: skip
        if name.startswith("webhook"):
            receiver_us = Stat.of(r["receiver_us"] for r in runs).median
            payload["kinds"][name]["receiver_cpu_us_per_call"] = receiver_us
            notes.append(
                f"{name}: the receiver (benchmarks/_receiver.py, a process of its own) used "
                f"{receiver_us:,.0f} µs of CPU per call (median)"
            )
    print_table(
        f"Hand-off throughput: {n:,} instances due at once, SQLite store"
        f"{', distinct params' if args.distinct else ''} (median of {args.repeat})",
        [
            "kind",
            "hand-offs/s (min-max)",
            "x no-op",
            "node CPU (cores)",
            "CPU µs each",
            "target",
            "",
        ],
        rows,
        [
            (
                "every hand-off was checked at the other end (receiver count, XLEN, stream "
                "and queue message counts)"
            ),
            (
                "node CPU near 1.0 means the node's one thread is the limit; CPU µs each is "
                "the node's CPU time per hand-off (its own work plus the client's)"
            ),
            *notes,
        ],
    )
    write_result("handoff", payload, write=not (args.no_write or args.quick))
    emit_json("handoff", payload)


if __name__ == "__main__":
    main()
