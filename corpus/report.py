"""What reading and cleaning did: counts per rule, and the inputs that were skipped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_PROBLEMS = 200  # a dump with a million bad members must not hold a million messages


@dataclass
class Report:
    """Counts per named rule (what each cleaning rule removed or changed) plus skipped inputs with reasons."""

    counts: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)
    n_problems: int = 0

    def count(self, rule: str, n: int = 1) -> None:
        """Add n to a rule's count (zero counts are not recorded)."""
        if n:
            self.counts[rule] += n

    def problem(self, source: str, message: str) -> None:
        """Record an input that was skipped or partly read, keeping the first MAX_PROBLEMS messages."""
        self.n_problems += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((source, message))

    def merge(self, other: Report) -> None:
        """Fold another report (from a worker process) into this one."""
        self.counts.update(other.counts)
        self.n_problems += other.n_problems
        room = MAX_PROBLEMS - len(self.problems)
        self.problems.extend(other.problems[: max(room, 0)])

    def to_dict(self) -> dict:
        """A JSON-ready view, rules sorted by name."""
        return {
            "counts": dict(sorted(self.counts.items())),
            "n_problems": self.n_problems,
            "problems": [{"source": s, "message": m} for s, m in self.problems],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """Inverse of to_dict."""
        return cls(
            counts=Counter(data.get("counts", {})),
            problems=[(p["source"], p["message"]) for p in data.get("problems", [])],
            n_problems=int(data.get("n_problems", 0)),
        )

    def format(self) -> str:
        """Human-readable lines for the CLI."""
        out = [f"  {rule:<24} {n:>10,}" for rule, n in sorted(self.counts.items())]
        if self.n_problems:
            out.append(f"  skipped or damaged inputs: {self.n_problems:,}")
            out.extend(f"    {s}: {m}" for s, m in self.problems[:20])
        return "\n".join(out) if out else "  (nothing to report)"
