"""Seed lists as users type them on the command line: ``0-19,42`` -> [0, 1, ..., 19, 42].

The syntax follows the StyleGAN2-ADA ``--seeds`` convention: comma-separated items, each either a
single non-negative integer or an inclusive range ``a-b`` with ``a <= b``. Order is kept, duplicates
are kept (a walk may revisit a seed on purpose), whitespace around items is ignored.
"""
from __future__ import annotations

from typing import List

# numpy.random.RandomState accepts seeds in [0, 2**32 - 1]; anything larger cannot be reproduced.
MAX_SEED = 2**32 - 1
# A guard against typos such as "0-1000000000" that would silently queue a billion clips.
MAX_COUNT = 1_000_000


class SeedSyntaxError(ValueError):
    """Raised for a seed string that does not follow the ``0-19,42`` syntax; the message says where."""


def _parse_int(text: str, spec: str) -> int:
    if not (text.isascii() and text.isdigit()):  # str.isdigit() accepts '²' and '٣', which int() refuses
        raise SeedSyntaxError(f"seeds {spec!r}: {text!r} is not a non-negative integer "
                              f"(expected e.g. '0-19,42')")
    value = int(text)
    if value > MAX_SEED:
        raise SeedSyntaxError(f"seeds {spec!r}: {value} is larger than the largest seed {MAX_SEED}")
    return value


def parse_seeds(spec: str) -> List[int]:
    """Parse ``spec`` (e.g. ``"0-19,42"``) into a list of integer seeds, ranges inclusive.

    Raises SeedSyntaxError with a one-line message for empty items, negative numbers, reversed
    ranges, non-numbers, seeds beyond 2**32 - 1 and lists longer than a million seeds.
    """
    if spec is None or not str(spec).strip():
        raise SeedSyntaxError("seeds: empty seed list (expected e.g. '0-19,42')")
    spec = str(spec)
    seeds: List[int] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise SeedSyntaxError(f"seeds {spec!r}: empty item between commas")
        if item.startswith("-"):
            raise SeedSyntaxError(f"seeds {spec!r}: {item!r} is negative; seeds are >= 0")
        if "-" in item:
            lo_text, _, hi_text = item.partition("-")
            lo, hi = _parse_int(lo_text.strip(), spec), _parse_int(hi_text.strip(), spec)
            if hi < lo:
                raise SeedSyntaxError(f"seeds {spec!r}: range {item!r} runs backwards (write {hi}-{lo})")
            if len(seeds) + (hi - lo + 1) > MAX_COUNT:
                raise SeedSyntaxError(f"seeds {spec!r}: more than {MAX_COUNT} seeds")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(_parse_int(item, spec))
            if len(seeds) > MAX_COUNT:
                raise SeedSyntaxError(f"seeds {spec!r}: more than {MAX_COUNT} seeds")
    return seeds
