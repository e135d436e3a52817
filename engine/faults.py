"""Crash checkpoints: where tests stop the engine as a killed process would."""


class EngineCrash(BaseException):
    """A BaseException, so no `except Exception` on the way out records anything:
    the rows are left exactly as a process killed at that point would leave them."""


# Tests arm a checkpoint with the number of passes to let through before it fires;
# it fires once and disarms.
crash_points: dict[str, int] = {}


def checkpoint(name: str) -> None:
    if name not in crash_points:
        return
    if crash_points[name] > 0:
        crash_points[name] -= 1
        return
    del crash_points[name]
    raise EngineCrash(name)
