"""Ctrl-C and SIGTERM during training: the first asks the loop to stop after the current step (each run's
summary then says "interrupted"); a second stops at once, leaving the last checkpoint to resume from.

    with stop_signals() as stop:
        ...; if stop.requested: ...
        with stop.shielded(): write a checkpoint   # a second interrupt waits until it is whole
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path


class StoppedAtOnce(Exception):
    """A second interrupt: the run(s) stopped where they were, without a summary. ``resume`` is what
    ``grokrun train --resume`` takes to continue them: the run directory, or the folder of seeds' ones."""

    def __init__(self, resume: Path):
        super().__init__(str(resume))
        self.resume = resume


class StopSignals:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step; a second one stops at once, except
    inside ``shielded()`` (a checkpoint being written), which it lets finish first."""

    def __init__(self):
        self.requested: str | None = None
        self._shielded, self._again = False, False

    def handler(self, signum, frame) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        elif self._shielded:
            self._again = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def shielded(self):
        self._shielded = True
        try:
            yield
        finally:
            self._shielded = False
        if self._again:
            raise KeyboardInterrupt


@contextmanager
def stop_signals():
    """Install StopSignals' handler for Ctrl-C and SIGTERM while the loop runs."""
    state = StopSignals()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield state
        return
    previous = {s: signal.signal(s, state.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
