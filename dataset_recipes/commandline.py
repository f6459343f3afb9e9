"""What every command line of this project shares: exit codes, one-line
errors, and SIGTERM handled like Ctrl-C.

``harmodt-recipes``, ``harmodt`` and the benchmark harness all run through
:func:`run_command`, so a bad input, an interrupt or a cluster's SIGTERM ends
the same way everywhere. It lives in ``dataset_recipes`` because that is the
lower layer: the recipes never import the algorithm, the algorithm imports it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "OneLineParser",
    "Terminated",
    "one_line",
    "say",
    "run_command",
    "sigterm_as_interrupt",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, but some of its work failed (benchmark cells)
EXIT_USAGE = 2  # bad input: nothing was run
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same cleanup runs."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (whitespace collapsed)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):  # str(KeyError) is the repr of its key
        text = f"missing key {text}"
    return " ".join(text.split())


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated`; the previous
    handler is restored after. A no-op outside the main thread (signal
    handlers can only be set there: tests call ``main`` from threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(
    prog: str,
    command: Callable[[], int],
    usage_errors: tuple[type[BaseException], ...],
    resume_hint: str = "",
) -> int:
    """Run ``command`` and turn its ending into an exit code: its own code,
    2 with one line for ``usage_errors``, 130 for Ctrl-C, 143 for SIGTERM
    (``resume_hint`` is appended to the interrupted/terminated line)."""
    with sigterm_as_interrupt():
        try:
            return command()
        except usage_errors as exc:
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except Terminated:
            print(f"{prog}: terminated{resume_hint}", file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print(f"{prog}: interrupted{resume_hint}", file=sys.stderr)
            return EXIT_INTERRUPTED


def say(out: Any, *lines: str) -> None:
    """Print ``lines`` to a rich ``Console`` as plain text: no highlighting
    (paths and numbers stay uncoloured) and no wrapping (a long path stays
    one line a user can copy)."""
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)
