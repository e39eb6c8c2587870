"""The SQLite store's own work per instance, on one thread, for instruction counts.

Insert N plain rows, claim them all, finish them all in batches of 1,000, straight on
``Ops`` (no node, no store thread), with both ended-row indexes (``keep``) or without
``ix_instances_ended_at`` (``drop``). Under ``valgrind --tool=callgrind`` for two sizes,
the difference of the instruction counts divided by the difference of the sizes is the
cost per instance, whatever else runs on the machine (benchmarks/PROFILE_NOTES.md).

    valgrind --tool=callgrind python benchmarks/store_ops_instructions.py [keep|drop] [-n N]

Run alone (as ``run_all.py`` does) it prints the wall time, which depends on the machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import base_parser, emit_json
from tickwork.model import Finish, NewRow
from tickwork.state import State
from tickwork.stores.sqlite._open import connect
from tickwork.stores.sqlite._ops import Ops


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("variant", nargs="?", choices=("keep", "drop"), default="keep")
    parser.add_argument("-n", type=int, default=None, help="instances (default 15,000)")
    args = parser.parse_args()
    variant, n = args.variant, args.n or (1_000 if args.quick else 15_000)
    t0 = time.perf_counter()
    opened = connect(str(Path(tempfile.mkdtemp()) / "t.db"), node_id=None, read_only=False)
    ops = Ops(opened.conn)
    if variant == "drop":
        opened.conn.execute("DROP INDEX ix_instances_ended_at")
    now = time.time_ns() // 1000
    ids = ops.insert([NewRow(task="t", run_at_us=now, params=b"") for _ in range(n)], now)
    ops.claim("me", now + 1, n, now, 60_000_000)
    token = dict(opened.conn.execute("SELECT id, claim_token FROM instances").fetchall())
    done = [Finish(i, token[i], State.SUCCEEDED, 1, None, None, now, now) for i in ids]
    ok = sum(sum(ops.finish("me", done[k : k + 1_000], now)) for k in range(0, n, 1_000))
    if ok != n:
        raise RuntimeError(f"{ok} of {n} finished")
    opened.close()
    wall = time.perf_counter() - t0
    print(f"{variant}: {n:,} inserted, claimed and finished in {wall:.2f} s ({n / wall:,.0f}/s)")
    emit_json("store_ops_instructions", {"variant": variant, "n": n, "per_s": n / wall})


if __name__ == "__main__":
    main()
