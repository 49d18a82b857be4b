"""Progress on stderr for the command line and training: a tqdm bar fed absolute positions."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress(tqdm):
    """``Progress(total, "frames")``; ``bar.goto(done, loss=...)`` moves it to ``done`` and shows the
    fields. ``start`` is work done before this run (a resumed one): shown, but not in the rate. On a
    terminal it redraws twice a second; into a log, a line every ten seconds."""

    def __init__(self, total: int | None, label: str, start: int = 0):
        tty = sys.stderr.isatty()
        super().__init__(total=total, desc=label, initial=start, file=sys.stderr, dynamic_ncols=tty,
                         mininterval=0.5 if tty else 10.0, ascii=not tty, leave=True)

    def goto(self, done: int, **fields: float | str) -> None:
        if fields:
            self.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in fields.items()},
                             refresh=False)
        self.update(done - self.n)
