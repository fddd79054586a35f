"""The one error of the node inspection commands: what the user asked for cannot be answered."""

from __future__ import annotations


class InspectError(Exception):
    """Something the user asked for cannot be answered (no such pod, netns gone, no table …): exit status 1,
    or 2 (`usage=True`) when the input itself is wrong."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
