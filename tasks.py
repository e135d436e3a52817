"""Wiring only: the invoice listener and the periodic loops, each a thin call."""


def start_background_work() -> None:
    pass


def stop_background_work() -> None:
    pass
