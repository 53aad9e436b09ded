"""The order in which one listener hears the clips: a seeded Fisher-Yates shuffle.

The page (``assets/survey.js``) shuffles in the browser with the same generator (mulberry32, a
32-bit generator that is easy to write identically in JavaScript and Python) so that an order can
be reproduced here from the seed a listener's answer sheet records, and tested.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence, TypeVar

T = TypeVar("T")
_MASK = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    """JavaScript's ``Math.imul`` on unsigned 32-bit values (the low 32 bits of the product)."""
    return (a * b) & _MASK


def mulberry32(seed: int) -> Iterator[float]:
    """Uniform floats in [0, 1) from a 32-bit ``seed``; the page's generator, step for step."""
    a = int(seed) & _MASK
    while True:
        a = (a + 0x6D2B79F5) & _MASK
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & _MASK) ^ t
        yield ((t ^ (t >> 14)) & _MASK) / 4294967296.0


def shuffled(items: Sequence[T], seed: int) -> List[T]:
    """A copy of ``items`` in Fisher-Yates order drawn from :func:`mulberry32` (``seed``)."""
    out = list(items)
    rand = mulberry32(seed)
    for i in range(len(out) - 1, 0, -1):
        j = int(next(rand) * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out
