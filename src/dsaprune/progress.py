"""Progress of long work, for a person at a terminal and for a log file alike: a bar where
stderr is a terminal, and otherwise a line at each quarter (a log would see nothing until the
work ends); :func:`say` writes one line per phase either way."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def say(message: str) -> None:
    """One line of progress on stderr, without breaking a bar that is being drawn."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


class Progress:
    """``total`` steps of ``desc``; ``update(n)`` as they are done, ``close()`` at the end (or
    use it as a context manager). Nothing at all when ``enabled`` is False."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=total,
            desc=desc,
            leave=False,
            dynamic_ncols=True,
            disable=not (enabled and self.tty),
            file=sys.stderr,
        )
        self.lines = enabled and not self.tty and total > 0
        self.total, self.desc, self.n, self.mark = total, desc, 0, 1
        self.t0 = time.perf_counter()

    @property
    def drawing(self) -> bool:
        """Whether a bar is shown (worth updating its text)."""
        return self.bar.disable is False

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.n += n
        quarter = min(4, 4 * self.n // self.total) if self.lines else 0
        if quarter >= self.mark:  # one line for the quarter reached, however many it passed
            dt = time.perf_counter() - self.t0
            say(f"{self.desc}: {25 * quarter}% ({self.n}/{self.total}, {dt:.0f} s)")
            self.mark = quarter + 1

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(**values)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
