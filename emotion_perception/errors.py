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
