"""PEFT's rank_pattern lookup: Python's `re` (what PEFT runs) against lora-bot's PatternTable, side by side.

Two workloads. (1) A config listing every module (N dotted keys, as resize tools and some trainers write
them), looked up for M module names: `re` tries each key in turn; the table indexes them. (2) The ReDoS key
`(.*.*)*y` against names of growing length: `re` takes exponential time (measured only up to a short name,
with the growth per character printed), the table refuses the key at once (pattern-unchecked).

    python benchmarks/patterns_bench.py [--keys 5000] [--names 50]
"""

from __future__ import annotations

import argparse
import re
import time

from bot.core.patterns import UNKNOWN, PatternTable


def naive_first_match(keys: list[str], name: str) -> int | None:
    return next((i for i, key in enumerate(keys) if re.match(rf"(.*\.)?({key})$", name)), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--names", type=int, default=50)
    args = parser.parse_args()

    keys = [f"model.layers.{i}.mlp.down_proj" for i in range(args.keys)]
    names = [f"model.layers.{i * 97 % args.keys}.mlp.down_proj" for i in range(args.names)]
    started = time.perf_counter()
    expected = [naive_first_match(keys, n) for n in names]
    naive = time.perf_counter() - started
    started = time.perf_counter()
    table = PatternTable(keys)
    built = time.perf_counter() - started
    got = [table.first_match(n) for n in names]
    indexed = time.perf_counter() - started
    assert got == expected, "the table answers exactly what re answers"
    print(
        f"{args.keys} keys x {args.names} names: re {naive:.2f} s, table {indexed:.3f} s "
        f"(of which building {built:.3f} s); ratio {naive / indexed:.0f}x"
    )

    previous = None
    for length in (10, 12, 14):
        name = "x" * length
        started = time.perf_counter()
        re.match(r"(.*\.)?((.*.*)*y)$", name)
        seconds = time.perf_counter() - started
        growth = f", x{seconds / previous:.1f} per 2 characters" if previous else ""
        print(f"re, (.*.*)*y on {length} characters: {seconds:.3f} s{growth}")
        previous = seconds
    started = time.perf_counter()
    answer = PatternTable(["(.*.*)*y"]).first_match("x" * 10_000)
    print(
        f"table, (.*.*)*y on 10,000 characters: {time.perf_counter() - started:.4f} s "
        f"({'refused: unknown' if answer is UNKNOWN else answer})"
    )


if __name__ == "__main__":
    main()
