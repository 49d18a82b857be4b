"""A one-line progress bar for the terminal (stderr), used by the command line and training."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int | None, label: str, stream: TextIO | None = None, every: float = 0.5,
                 start: int = 0):
        self.total, self.label = total, label
        self.start = start  # work already done before this bar (a resumed run): not in the rate
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = self.stream.isatty()
        self.started = self._last = time.perf_counter()

    def update(self, done: int, **fields: float | str) -> None:
        now = time.perf_counter()
        if now - self._last < self.every and done != self.total:
            return
        self._last = now
        rate = (done - self.start) / max(now - self.started, 1e-9)
        parts = [f"{self.label} {done}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            width = 20
            fill = int(width * done / self.total)
            parts.insert(0, "[" + "#" * fill + "." * (width - fill) + "]")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        parts.append(f"{rate:.2f}/s")
        line = " ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
