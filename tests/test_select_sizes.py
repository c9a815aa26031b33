"""The one sizes grammar (moeprint.select.sizes), against lists written out by hand."""

from __future__ import annotations

import pytest

from moeprint.errors import MoeprintError
from moeprint.select.sizes import parse_sizes, resolve_sizes

# The reference project's 29 gpt-oss-20b variants keep 4, 5, ..., 32 experts.
REFERENCE_29 = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
REFERENCE_29 += [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]


@pytest.mark.parametrize(
    ("spec", "num_experts", "expected"),
    [
        ("8", 32, [8]),
        ("4,8,16", 32, [4, 8, 16]),
        ("16,4,8,4", 32, [4, 8, 16]),  # sorted, each size once
        ("4-8", 32, [4, 5, 6, 7, 8]),
        ("4-32", 32, REFERENCE_29),
        ("8-32:8", 32, [8, 16, 24, 32]),
        ("3-10:3", 32, [3, 6, 9]),
        ("2,4-5", 8, [2, 4, 5]),
        ("25%", 32, [8]),
        ("50%,25%", 32, [8, 16]),
        ("12.5%", 32, [4]),
        ("10%", 32, [3]),  # 3.2 rounds to 3
        ("30%", 32, [10]),  # 9.6 rounds to 10
        ("100%", 24, [24]),
        ("25%,8,4-6", 32, [4, 5, 6, 8]),
        (" 4 - 6 , 8 ", 32, [4, 5, 6, 8]),  # blanks ignored
        ("8,,16,", 32, [8, 16]),  # empty items ignored
    ],
)
def test_sizes_resolve_to_the_listed_counts(spec, num_experts, expected):
    assert parse_sizes(spec).resolve(num_experts) == expected
    assert resolve_sizes(spec, num_experts) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("4x", "'4x' is not a count, range or percentage"),
        ("8-4", "'8-4' is an empty range"),
        ("4-8:0", "'4-8:0' is an empty range"),
        ("-3", "'-3' is not a count"),
        ("%", "'%' is not a count"),
        ("25%-50%", "'25%-50%' is not a count"),
        ("1e1%", "'1e1%' is not a count"),
        ("", "name no size"),
        (",", "name no size"),
    ],
)
def test_bad_grammar_is_one_clear_error(spec, message):
    with pytest.raises(MoeprintError, match=message):
        parse_sizes(spec)


@pytest.mark.parametrize(
    ("spec", "num_experts", "item"),
    [("0", 8, "'0'"), ("9", 8, "'9'"), ("4-40", 32, "'4-40'"), ("1%", 32, "'1%'"), ("150%", 8, "'150%'")],
)
def test_sizes_outside_the_model_are_refused(spec, num_experts, item):
    sizes = parse_sizes(spec)  # the grammar is fine; the model decides
    with pytest.raises(MoeprintError, match=f"--sizes item {item} is outside 1..{num_experts} experts"):
        sizes.resolve(num_experts)


def test_library_callers_may_pass_counts():
    assert resolve_sizes([16, 4, 16], 32) == [4, 16]
    assert resolve_sizes(parse_sizes("25%"), 16) == [4]
    with pytest.raises(MoeprintError, match="outside 1..8"):
        resolve_sizes([9], 8)
