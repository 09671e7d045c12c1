"""The one error family the CLI catches and prints as a single line (exit code 2)."""

from __future__ import annotations


class ClbenchError(Exception):
    """A user-facing problem: what went wrong and how to fix it, in one line.

    Raised anywhere below the CLI; the CLI prints ``error: <problem> (fix: <fix>)`` and exits 2.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem.strip().rstrip(".")
        self.fix = fix.strip().rstrip(".") if fix else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem if not self.fix else f"{self.problem} — fix: {self.fix}"
        return " ".join(text.split())


class DataError(ClbenchError):
    """A dataset folder or file is missing, malformed or inconsistent."""


class ProgramError(ClbenchError):
    """A CLEVR functional program is malformed or cannot run on its scene."""


class ConfigError(ClbenchError):
    """A command-line option, config file or strategy parameter is invalid."""
