"""A hypothesis state machine over schedule / abort / advance time / graceful restart, on
the memory store and on SQLite.

After every step the store is checked against the model of
:class:`tests.support.node_machine.NodeMachine`: no instance lost, each in exactly one
state, none run twice (no crash happens here), and every instance that is due and not
aborted has run and SUCCEEDED.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.support.node_machine import NodeMachine


class SchedulerMachine(NodeMachine):
    """The base machine as it is: graceful restarts, no crash."""


class SchedulerMachineSQLite(SchedulerMachine):
    kind = "sqlite"


SchedulerMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_machine = SchedulerMachine.TestCase

SchedulerMachineSQLite.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_machine_sqlite = SchedulerMachineSQLite.TestCase
