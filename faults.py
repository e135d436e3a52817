"""Crash checkpoints: where tests stop the engine as a killed process would."""


class EngineCrash(BaseException):  # noqa: N818
    """A BaseException, so no `except Exception` on the way out records anything:
    the rows are left exactly as a process killed at that point would leave them."""


# Tests add checkpoint names here; each fires once.
crash_points: set[str] = set()


def checkpoint(name: str) -> None:
    if name in crash_points:
        crash_points.discard(name)
        raise EngineCrash(name)
