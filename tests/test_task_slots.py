"""The Executor's per-task slots (``Task.max_concurrent``) alone: a task at its limit
parks its instances, a run that ends hands its slot to the first parked one, and the
wait is counted."""

from __future__ import annotations

import trio

from tickwork.actors._task_slots import TaskSlots
from tickwork.model import Instance
from tickwork.state import State


def _inst(iid: int, task: str = "a") -> Instance:
    return Instance(id=iid, task=task, run_at_us=0, params=b"", state=State.CLAIMED)


async def test_a_slot_goes_to_the_first_parked_instance(autojump_clock):
    slots = TaskSlots()
    one, two, three = _inst(1), _inst(2), _inst(3)
    assert slots.take("a", 1, one, trio.current_time())
    assert not slots.take("a", 1, two, trio.current_time())
    assert not slots.take("a", 1, three, trio.current_time())
    assert slots.take("b", 1, _inst(4, "b"), trio.current_time())  # another task's slot
    assert slots.waiting == 2
    await trio.sleep(2)
    assert slots.give_back("a") is two  # its run holds the slot now
    assert slots.wait_total == 2
    assert slots.waiting == 1
    assert slots.give_back("b") is None


async def test_parked_instances_leave_on_abort_and_shutdown(autojump_clock):
    slots = TaskSlots()
    now = trio.current_time()
    assert slots.take("a", 1, _inst(1), now)
    for inst in (_inst(2), _inst(3), _inst(5, "b"), _inst(4)):
        slots.take(inst.task, 0 if inst.task == "b" else 1, inst, now)
    removed = slots.remove(3)
    assert removed is not None
    assert removed.id == 3
    assert slots.remove(3) is None
    assert [i.id for i in slots.drain()] == [2, 4, 5]  # by task, then in order
    assert slots.waiting == 0
    assert slots.give_back("a") is None
