"""The one error shape shared by every layer: a file whose field has a problem.

``data`` (annotations), ``nets`` (checkpoints) and ``train`` (recipes) each raise their own
subclass, so a caller can catch one kind (``CheckpointError``) or every bad-input file at once
(``FieldError``). Depends on nothing, so any layer may import it.
"""

from __future__ import annotations

from pathlib import Path


class FieldError(ValueError):
    """A file that cannot be used; the message names the file, the field and the problem."""

    def __init__(self, file: str | Path, field_name: str, problem: str) -> None:
        super().__init__(f"{file}: field '{field_name}': {problem}")
        self.file = str(file)
        self.field_name = field_name
        self.problem = problem


def quote_untrusted(value: object, limit: int = 64) -> str:
    """``value`` fit for one log line when it comes from outside (a peer on the DDS domain, a
    dataset file): quoted, control characters (newlines, ANSI escapes) escaped, and cut to
    ``limit`` characters with the original length said, so that it can neither forge a log line
    nor flood the log."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:limit]
    # repr escapes \n, \r, \x1b and every other non-printable character, and adds the quotes.
    quoted = repr(cut)
    if len(text) > limit:
        quoted += f"... ({len(text)} characters)"
    return quoted


def output_file_problem(option: str, path: Path) -> str | None:
    """Why a command's output file ``path`` (given as ``option``) cannot be written, or None:
    checked before a run's work, so a typo does not cost a benchmark and end in a traceback."""
    if path.is_dir():
        return f"{option} {path}: is a folder, not a file"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{option} {path}: {parent} is a file, not a folder"
            break
    return None
