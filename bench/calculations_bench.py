"""Largest-remainder allocation speed (pure math, no LNbits): prints a table."""

import importlib.util
import time
from decimal import Decimal
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "satmachine_calculations",
    Path(__file__).resolve().parent.parent / "calculations.py",
)
assert _spec and _spec.loader
calc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calc)


def per_call_ms(weights: list, runs: int = 50) -> float:
    calc.largest_remainder(10**12 + 7, weights)
    start = time.perf_counter()
    for _ in range(runs):
        calc.largest_remainder(10**12 + 7, weights)
    return (time.perf_counter() - start) / runs * 1000


def main() -> None:
    print(f"{'weights':>8} {'int ms':>8} {'Decimal ms':>11}")
    for n in (10, 100, 1_000, 10_000):
        ints = [(i * 7919) % 100_003 + 1 for i in range(n)]
        decimals = [Decimal(w).scaleb(-4) for w in ints]
        print(f"{n:>8} {per_call_ms(ints):>8.3f} {per_call_ms(decimals):>11.3f}")


if __name__ == "__main__":
    main()
