"""Seed lists: the ``--seeds 0-19,42`` syntax of gen_audio.py."""
import pytest

from audio_ext.core.seeds import MAX_SEED, SeedSyntaxError, parse_seeds


def test_range_and_single_seed_expand_in_order():
    assert parse_seeds("0-19,42") == list(range(20)) + [42]


def test_ranges_are_inclusive_and_single_element_ranges_allowed():
    assert parse_seeds("5-7") == [5, 6, 7]
    assert parse_seeds("3-3") == [3]


def test_whitespace_ignored_order_and_duplicates_kept():
    assert parse_seeds(" 9 , 2- 4 ,9") == [9, 2, 3, 4, 9]


def test_largest_representable_seed_accepted():
    assert parse_seeds(str(MAX_SEED)) == [MAX_SEED]


@pytest.mark.parametrize("spec, fragment", [
    ("", "empty seed list"),
    ("   ", "empty seed list"),
    ("1,,2", "empty item"),
    ("1,", "empty item"),
    ("-3", "negative"),
    ("7-2", "runs backwards"),
    ("a-3", "'a' is not a non-negative integer"),
    ("1.5", "'1.5' is not a non-negative integer"),
    ("1-2-3", "'2-3' is not a non-negative integer"),
    (str(MAX_SEED + 1), "larger than the largest seed"),
    ("0-2000000", "more than"),
])
def test_bad_syntax_gives_one_line_message(spec, fragment):
    with pytest.raises(SeedSyntaxError) as info:
        parse_seeds(spec)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_seed_syntax_error_is_a_value_error():
    assert issubclass(SeedSyntaxError, ValueError)
