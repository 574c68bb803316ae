"""One error type for everything a user can cause: what is wrong, where, and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UserError(Exception):
    """A failure the user can fix. Printed as one message, never as a traceback."""

    message: str
    fix: str = ""
    where: str = ""
    details: list[str] = field(default_factory=list)
    exit_code: int = 2

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def render(self) -> str:
        lines = [f"error: {self.where + ': ' if self.where else ''}{self.message}"]
        lines += [f"  {d}" for d in self.details]
        if self.fix:
            lines.append(f"fix: {self.fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"error": self.message, "where": self.where, "fix": self.fix, "details": self.details}
