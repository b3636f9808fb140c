"""What a dataset reader skipped, and why: readers skip unusable people/images instead of crashing,
and say so once, with counts and a few examples, instead of one warning per item."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from emotion_perception.errors import quote_untrusted

MAX_EXAMPLES = 10


@dataclass
class ReadReport:
    """Counts of skipped people and images by reason, plus the first few examples of each."""

    source: str = ""
    skipped_people: Counter = field(default_factory=Counter)
    skipped_images: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def _example(self, reason: str, where: str) -> None:
        listed = self.examples.setdefault(reason, [])
        if len(listed) < MAX_EXAMPLES:
            listed.append(where)

    def skip_person(self, reason: str, where: str) -> None:
        self.skipped_people[reason] += 1
        self._example(reason, where)

    def skip_image(self, reason: str, where: str) -> None:
        self.skipped_images[reason] += 1
        self._example(reason, where)

    def note(self, reason: str, where: str) -> None:
        """Something kept but worth counting (e.g. CAER-S images without a detected face)."""
        self.notes[reason] += 1
        self._example(reason, where)

    @property
    def empty(self) -> bool:
        return not (self.skipped_people or self.skipped_images or self.notes)

    def summary(self) -> str:
        if self.empty:
            return f"{self.source}: nothing skipped"
        parts = []
        for kind, counts in (("people skipped", self.skipped_people), ("images skipped", self.skipped_images),
                             ("noted", self.notes)):
            for reason, count in sorted(counts.items()):
                # Examples carry names from the dataset's files: quoted and cut, so a file name
                # with a newline or an escape sequence cannot forge or garble a log line.
                examples = ", ".join(quote_untrusted(e, 160) for e in self.examples.get(reason, [])[:3])
                parts.append(f"{count} {kind}: {reason} (e.g. {examples})")
        return f"{self.source}: " + "; ".join(parts)

    def log(self, logger: logging.Logger) -> None:
        if not self.empty:
            logger.warning("%s", self.summary())
