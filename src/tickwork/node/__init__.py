"""The node: :func:`open_scheduler` wires the actors, :class:`Scheduler` is the API over them."""

from tickwork.node.scheduler import Scheduler as Scheduler
from tickwork.node.scheduler import SchedulerStatistics as SchedulerStatistics
from tickwork.node.wiring import open_scheduler as open_scheduler
