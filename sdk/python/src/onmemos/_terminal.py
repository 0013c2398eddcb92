"""The local terminal for ``shell()``: raw mode (restored on exit), its size, and SIGWINCH."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, Optional, Tuple


def terminal_size(fd: int) -> Tuple[int, int]:
    """(columns, rows) of the terminal on fd, or 80x24 when it is not one."""
    try:
        size = os.get_terminal_size(fd)
        return (size.columns or 80, size.lines or 24)
    except OSError:
        return (80, 24)


@contextmanager
def raw_mode(fd: int) -> Iterator[bool]:
    """Puts the terminal on fd in raw mode for the block, and restores it however the block ends; yields whether
    fd is a terminal (nothing is changed when it is not)."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    """Calls `callback` on SIGWINCH during the block (main thread only; elsewhere, nothing), then restores the old
    handler."""
    sigwinch = getattr(signal, "SIGWINCH", None)
    if sigwinch is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(sigwinch, lambda _signum, _frame: callback())
    try:
        yield
    finally:
        signal.signal(sigwinch, previous)


def default_term() -> Optional[str]:
    return os.environ.get("TERM") or "xterm-256color"
