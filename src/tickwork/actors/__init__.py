"""The actors: one trio task each, owning one transition of the state machine.

Puller (PENDING -> CLAIMED), Timekeeper (deadlines), Executor (RUNNING), Recorder
(outcomes -> terminal / retry). They talk over bounded trio memory channels; the
messages are in :mod:`tickwork.actors.messages`.
"""
