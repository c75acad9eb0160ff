"""Progress callbacks of the analysis pipelines (one pass and chunked)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float], None]


class ProgressReporter:
    """Forward strictly increasing fractions to the caller's callback.

    Parameters
    ----------
    callback : callable(stage, fraction) or None
        Called with a stage name and a fraction in [0, 1], each call with a larger fraction
        than the last; calls that would not advance are dropped. ``None`` reports nothing.
    """

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.last = -1.0

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.callback is not None and fraction > self.last:
            self.last = fraction
            # Exceptions propagate unchanged: that is how a worker cancels a job.
            self.callback(stage, fraction)
