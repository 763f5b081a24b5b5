"""What the CLI's commands share: exit codes and printing to people."""

from __future__ import annotations

EXIT_FAILED = 1  # the command could not do its work; the message says why (no traceback)
EXIT_CONFIG = 2
EXIT_AMI = 3
EXIT_STORAGE = 4
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


def say(text: str) -> None:
    print(text, flush=True)
