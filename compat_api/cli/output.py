"""Writing to a stdout whose reader may go away: `flowtime stream runs ID --json | head`, or a
`flowtime demo 2>&1 | tee log` whose `tee` died of the same Ctrl-C that asks the demo to stop.

Python ignores SIGPIPE, so a write to a closed pipe raises `BrokenPipeError`. A command must not
take that for a failure of its own (a tail would reconnect forever, a demo would lose its Ctrl-C
handler to the exception): `say` prints, and when the reader is gone it points stdout at
/dev/null (so the interpreter's final flush cannot fail either) and returns False; a command that
exists only to print stops then (`OutputClosedError`), others go on quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys

_detached = False


def detach_stdout() -> None:
    """Send the rest of stdout to /dev/null (Python's recommended way after EPIPE)."""
    global _detached
    _detached = True
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stdout_closed() -> bool:
    """True once a write found stdout's reader gone."""
    return _detached


def say(text: str) -> bool:
    """Print one line and flush; False (and stdout detached) when nobody reads stdout any more."""
    if _detached:
        return False
    try:
        print(text, flush=True)
    except BrokenPipeError:
        detach_stdout()
        return False
    return True


__all__ = ["detach_stdout", "say", "stdout_closed"]
