"""Index lists as users type them on the command line: seeds ``0-19,42`` -> [0, 1, ..., 19, 42], clips ``0,2,5-7``.

The syntax follows the StyleGAN2-ADA ``--seeds`` convention: comma-separated items, each either a
single non-negative integer or an inclusive range ``a-b`` with ``a <= b``. Order is kept, duplicates
are kept (a walk may revisit a seed on purpose), whitespace around items is ignored.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

# numpy.random.RandomState accepts seeds in [0, 2**32 - 1]; anything larger cannot be reproduced.
MAX_SEED = 2**32 - 1
# A guard against typos such as "0-1000000000" that would silently queue a billion clips.
MAX_COUNT = 1_000_000


class SeedSyntaxError(ValueError):
    """Raised for a seed string that does not follow the ``0-19,42`` syntax; the message says where."""


def _parse_int(text: str, spec: str, maximum: Optional[int]) -> int:
    if not (text.isascii() and text.isdigit()):  # str.isdigit() accepts '²' and '٣', which int() refuses
        raise SeedSyntaxError(f"seeds {spec!r}: {text!r} is not a non-negative integer "
                              f"(expected e.g. '0-19,42')")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SeedSyntaxError(f"seeds {spec!r}: {value} is larger than the largest seed {maximum}")
    return value


def parse_ranges(spec: str, maximum: Optional[int] = MAX_SEED) -> List[Tuple[int, int]]:
    """The one parser of index lists: inclusive ``(first, last)`` pairs from ``'0-19,42'``, in the order
    given, nothing expanded (so ``0-100000000000`` costs no more than ``0-4``).

    Raises SeedSyntaxError with a one-line message for empty lists or items, negative numbers,
    reversed ranges, non-numbers and numbers above ``maximum`` (None: no limit).
    """
    if spec is None or not str(spec).strip():
        raise SeedSyntaxError("seeds: empty seed list (expected e.g. '0-19,42')")
    spec = str(spec)
    out: List[Tuple[int, int]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise SeedSyntaxError(f"seeds {spec!r}: empty item between commas")
        if item.startswith("-"):
            raise SeedSyntaxError(f"seeds {spec!r}: {item!r} is negative; seeds are >= 0")
        if "-" in item:
            lo_text, _, hi_text = item.partition("-")
            lo, hi = _parse_int(lo_text.strip(), spec, maximum), _parse_int(hi_text.strip(), spec, maximum)
            if hi < lo:
                raise SeedSyntaxError(f"seeds {spec!r}: range {item!r} runs backwards (write {hi}-{lo})")
        else:
            lo = hi = _parse_int(item, spec, maximum)
        out.append((lo, hi))
    return out


def parse_seeds(spec: str) -> List[int]:
    """Parse ``spec`` (e.g. ``"0-19,42"``) into a list of integer seeds, ranges inclusive (:func:`parse_ranges`).

    Raises SeedSyntaxError with a one-line message for empty items, negative numbers, reversed
    ranges, non-numbers, seeds beyond 2**32 - 1 and lists longer than a million seeds.
    """
    seeds: List[int] = []
    for lo, hi in parse_ranges(spec):
        if len(seeds) + (hi - lo + 1) > MAX_COUNT:
            raise SeedSyntaxError(f"seeds {spec!r}: more than {MAX_COUNT} seeds")
        seeds.extend(range(lo, hi + 1))
    return seeds


def parse_clip_ranges(spec: str) -> List[Tuple[int, int]]:
    """Inclusive ``(first, last)`` clip index ranges from ``'0-4'``, ``'3'`` or ``'0,2,5-7'`` (syntax only,
    :func:`parse_ranges`); see :func:`parse_clip_range` for the check against an archive's size."""
    try:
        return parse_ranges(spec, maximum=None)
    except SeedSyntaxError:
        raise ValueError(f"bad clip range {spec!r}: use non-negative indices like '0-4', '7' or '0,2,5-7'") from None


def parse_clip_range(spec: str, count: Optional[int] = None) -> List[int]:
    """Clip indices from ``'0-4'`` (inclusive), ``'3'`` or ``'0,2,5-7'``, in the order given, without repeats.

    With ``count`` (the archive's number of clips) an index at or past it is an error naming the
    valid range, raised before any list is built: the work is linear in the clips asked for and
    never more than ``count`` per range, whatever the numbers typed.
    """
    ranges = parse_clip_ranges(spec)
    if count is not None:
        for lo, hi in ranges:
            if hi >= count:
                last = f"0-{count - 1}" if count else "none"
                raise ValueError(f"clip {max(lo, count)} is out of range (the archive has {count} clips, {last})")
    out: List[int] = []
    seen = set()
    for lo, hi in ranges:
        for i in range(lo, hi + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out
