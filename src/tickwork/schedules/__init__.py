"""Recurring schedules, pure (no I/O): triggers, the stored record, the plan, cron and DST rules."""

from tickwork.schedules.schedule import Schedule as Schedule
from tickwork.schedules.triggers import Cron as Cron
from tickwork.schedules.triggers import Interval as Interval
from tickwork.schedules.triggers import Trigger as Trigger
