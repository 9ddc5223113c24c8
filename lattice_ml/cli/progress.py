"""A one-line progress display on stderr.

::

    with Progress(total=2200, label="hmc", mode="auto") as bar:
        for i in range(2200):
            ...
            bar.update(acceptance=0.91, dH=0.03)

draws ``hmc  45.5% 1001/2200  83.1/s  ETA 0:14  acceptance=0.91 dH=0.03`` with a carriage return,
at most ten times a second, and ends the line on exit. The rate and the ETA are measured from
the end of the first update, which pays for kernel compilation and would otherwise make the
first estimates wildly long. ``mode="auto"`` shows it only when the
stream is a terminal, ``"always"`` and ``"never"`` force it; a hidden display costs one
attribute test per update.

One object can serve several phases: :meth:`Progress.reset` ends the current line and starts
counting again with a new total and label, and calling the object,
``progress(total, label)``, returns a fresh display with the same mode and stream (so a function
that receives a ``Progress`` can open as many bars as it needs).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

__all__ = ["Progress", "MODES"]

MODES = ("auto", "always", "never")


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _format_duration(seconds: float) -> str:
    if not seconds < 360000:  # also catches inf and nan
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _format_info(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class Progress:
    """Progress line with percentage, rate, ETA and free-form fields.

    Parameters
    ----------
    total : int or None
        Number of steps expected (``None``: unknown; no percentage or ETA).
    label : str
        Text at the start of the line.
    mode : ``"auto"`` | ``"always"`` | ``"never"``
        ``"auto"`` shows the line only when ``stream`` is a terminal.
    stream : text file, optional
        Where to draw (default ``sys.stderr`` at construction time).
    min_interval : float
        Minimum seconds between two redraws (default 0.1: at most 10 updates per second).
    clock : callable, optional
        Monotonic clock in seconds (default :func:`time.monotonic`; for tests).
    """

    def __init__(self, total: int | None = None, label: str = "", mode: str = "auto",
                 stream: TextIO | None = None, min_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = float(min_interval)
        self._clock = clock
        self.visible = mode == "always" or (mode == "auto" and _is_tty(self.stream))
        self.total = total
        self.label = label
        self.count = 0
        self.info: dict[str, Any] = {}
        self._start = self._clock() if self.visible else 0.0
        self._first: tuple[float, int] | None = None  # (time, count) at the first update
        self._last_draw = -float("inf")
        self._last_len = 0
        self._drawn = False
        self._dirty = False

    # -- phases -----------------------------------------------------------------------------
    def __call__(self, total: int | None = None, label: str = "") -> "Progress":
        """A new display with this one's mode, stream, interval and clock."""
        return Progress(total, label, self.mode, self.stream, self.min_interval, self._clock)

    def reset(self, total: int | None = None, label: str | None = None) -> None:
        """End the current line (if drawn) and start counting again from zero."""
        self.close()
        self.total = total
        if label is not None:
            self.label = label
        self.count = 0
        self.info = {}
        if self.visible:
            self._start = self._clock()
            self._first = None
            self._last_draw = -float("inf")

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- drawing ----------------------------------------------------------------------------
    def update(self, n: int = 1, **info: Any) -> None:
        """Advance by ``n`` steps; ``info`` fields (e.g. ``acceptance=0.91``) are shown."""
        if not self.visible:
            return
        self.count += n
        if info:
            self.info.update(info)
        now = self._clock()
        if self._first is None:
            self._first = (now, self.count)
        finished = self.total is not None and self.count >= self.total
        if now - self._last_draw < self.min_interval and not finished:
            self._dirty = True
            return
        self._last_draw = now
        self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the progress line (without carriage return)."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 0.0)
        # the rate (and the ETA) leave out the first update, which pays for compilation and
        # warm-up; until a second update is done, there is no rate to show
        rate = 0.0
        if self._first is not None and self.count > self._first[1] and now > self._first[0]:
            rate = (self.count - self._first[1]) / (now - self._first[0])
        parts = [self.label] if self.label else []
        if self.total:
            pct = 100.0 * self.count / self.total
            parts.append(f"{pct:5.1f}% {self.count}/{self.total}")
        else:
            parts.append(f"{self.count}")
        parts.append(f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s")
        if self.total:
            remaining = max(self.total - self.count, 0)
            if self.count >= self.total:
                parts.append(f"in {_format_duration(elapsed)}")
            else:
                parts.append("ETA " + (_format_duration(remaining / rate) if rate > 0
                                       else "--:--"))
        if self.info:
            parts.append(" ".join(f"{k}={_format_info(v)}" for k, v in self.info.items()))
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = " " * max(self._last_len - len(text), 0)
        try:
            self.stream.write("\r" + text + pad)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: stop drawing
            self.visible = False
            return
        self._last_len = len(text)
        self._drawn = True
        self._dirty = False

    def close(self) -> None:
        """Draw the final state and end the line (no-op when hidden or never drawn)."""
        if not self.visible or not self._drawn:
            return
        if self._dirty:
            self._draw(self._clock())
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self._drawn = False
        self._last_len = 0
