"""``StopReport``: what the persistence actor could not store when it stopped.

The actor's final flush runs in its own thread as it stops, after which
nothing can ask it anything; the process that owns it (``runyard serve``)
still has to know whether acknowledged data was lost, to log it and exit
non-zero.  So the owner hands the actor a report to fill in, and reads it
once the actor has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StopReport"]


@dataclass(slots=True)
class StopReport:
    """Filled in by the persistence actor's final flush; read after it stopped.

    ``unsaved``: ids of the runs whose latest writes were not stored (empty:
    nothing lost); ``error``: why the flush failed.
    """

    unsaved: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def lost(self) -> bool:
        return bool(self.unsaved)
