"""A hypothesis state machine with crash points: schedule / abort / advance time / restart,
and crashes between any two store writes, on the memory store and on SQLite.

A crash drops the process state without a graceful shutdown: the FaultyStore refuses every
call from the chosen write on (that write applied or not: the commit landed and the reply
was lost, or the process died first) and the node's task tree is cancelled; then the store
is opened again by a new node. Tasks of both delivery modes run throughout. After every
step the store is checked against the model of
:class:`tests.support.node_machine.NodeMachine` (the graceful machine's, loosened only
where a crash allows):

* no instance is lost, and none is ever in two terminal states (a terminal state never
  changes);
* an at-most-once instance never runs twice; when it ends FAILED it was interrupted;
* an at-least-once instance that is due (and not aborted) runs at least once and ends
  SUCCEEDED, however many crashes it went through.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import rule

from tests.support.node_machine import NodeMachine


class CrashMachine(NodeMachine):
    @rule(writes=st.integers(1, 20), apply=st.booleans(), seconds=st.integers(1, 1800))
    def crash_between_writes(self, writes: int, apply: bool, seconds: int) -> None:
        """Let time pass; the process dies at the n-th store write from now."""
        self.store.arm_crash(writes, apply=apply)
        self.portal.advance(seconds)
        if self.store.crashed:
            _event(f"crash at a store write ({'applied' if apply else 'not applied'})")
            self.crashes += 1
            self.portal.run(self.node.wait_crashed)
            self._start()
        else:
            _event("an armed crash point was not reached")
            self.store.disarm()

    @rule()
    def crash_now(self) -> None:
        self.crashes += 1
        self.portal.run(self.node.crash)
        self._start()


def _event(text: str) -> None:
    """hypothesis.event, also when a rule is called outside a hypothesis run."""
    with contextlib.suppress(HypothesisException):
        event(text)


class CrashMachineSQLite(CrashMachine):
    kind = "sqlite"


CrashMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_crash_machine = CrashMachine.TestCase

CrashMachineSQLite.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_crash_machine_sqlite = CrashMachineSQLite.TestCase


@pytest.mark.parametrize("machine_class", [CrashMachine, CrashMachineSQLite])
def test_crashes_were_exercised(machine_class: type[CrashMachine]) -> None:
    """The machine does crash nodes (a guard against a harness that never fires)."""
    machine = machine_class()
    try:
        machine.schedule(delay=0, count=3, task="amo")
        machine.schedule(delay=0, count=3, task="alo")
        machine.crash_between_writes(writes=2, apply=True, seconds=600)
        machine.nothing_lost_ended_once_and_delivery_kept()
        assert machine.crashes == 1
        machine.advance(600)
        machine.nothing_lost_ended_once_and_delivery_kept()
        states: Any = Counter(machine.ended.values())
        assert sum(states.values()) == 6
    finally:
        machine.teardown()
