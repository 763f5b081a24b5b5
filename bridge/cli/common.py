"""What the CLI's commands share: exit codes and printing to people."""

from __future__ import annotations

EXIT_CONFIG = 2
EXIT_AMI = 3
EXIT_STORAGE = 4


def say(text: str) -> None:
    print(text, flush=True)
