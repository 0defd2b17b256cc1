"""The planner's error: an estimate that cannot be made."""

from __future__ import annotations

from peftcore.errors import PeftcoreError


class PlannerError(PeftcoreError):
    """The estimate cannot be made; the message (one line) says what to pass instead."""
