"""Plate grammars: normalising, country fits, confusable fixes, edge junk, rejections, similarity."""

from __future__ import annotations

import re

import pytest

from anpr.plates import (
    CORRECTED_CONFIDENCE_SCALE,
    GRAMMARS,
    PlateText,
    confusable_key,
    edit_distance,
    interpret,
    normalise,
    part_of,
    similar,
)

# The 12 Cyrillic letters of Ukrainian plates, spelt as escapes: in source they look like Latin.
CYRILLIC_12 = "\u0410\u0412\u0421\u0415\u041d\u0406\u041a\u041c\u041e\u0420\u0422\u0425"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("AA1234BB", "AA1234BB"),
        ("aa 1234 bb", "AA1234BB"),
        ("B-123.ABC!", "B123ABC"),
        ("  ", ""),
        ("", ""),
        (CYRILLIC_12, "ABCEHIKMOPTX"),
        (CYRILLIC_12.lower(), "ABCEHIKMOPTX"),
        ("\u0410\u04101234\u0412\u0412", "AA1234BB"),
        ("\u0430\u0430 1234 \u0432\u0432", "AA1234BB"),
        ("\u0417\u04141\u00dc2", "12"),  # Cyrillic without a Latin twin, and a Latin accent: dropped
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "text", "country"),
    [
        ("AA1234BB", "AA1234BB", "UA"),
        ("KA 0001 XX", "KA0001XX", "UA"),
        ("II1234AA", "II1234AA", "UA"),
        ("12345KA", "12345KA", "UA"),  # 1995 series
        ("ABC 123", "ABC123", "MD"),
        ("C AG 307", "CAG307", "MD"),  # pre-2015 Chisinau: same shape as today's plates
        ("BL AC 002", "BLAC002", "MD"),
        ("RM 1234", "RM1234", "MD"),
        ("MAI 1234", "MAI1234", "MD"),
        ("CD 123 AB", "CD123AB", "MD"),
        ("B 12 ABC", "B12ABC", "RO"),
        ("B 123 ABC", "B123ABC", "RO"),
        ("CJ 12 ABC", "CJ12ABC", "RO"),
        ("IS 99 XYZ", "IS99XYZ", "RO"),  # a leading I is a county here, not a border
        ("WB 12345", "WB12345", "PL"),
        ("KR 1234A", "KR1234A", "PL"),
        ("DW 1AC23", "DW1AC23", "PL"),
        ("KRA 12AC", "KRA12AC", "PL"),
        ("WPI A123", "WPIA123", "PL"),
        ("ELW 12345", "ELW12345", "PL"),
    ],
)
def test_exact_fits(raw: str, text: str, country: str) -> None:
    plate = interpret(raw)
    assert plate == PlateText(text, country, (1.0,) * len(text), corrected=False)


@pytest.mark.parametrize(
    ("raw", "text", "country", "swapped"),
    [
        ("AAI234BB", "AA1234BB", "UA", [2]),
        ("AAl234BB", "AA1234BB", "UA", [2]),
        ("0C1234ET", "OC1234ET", "UA", [0]),
        ("AA12S4B8", "AA1254BB", "UA", [4, 7]),
        ("ABC12O", "ABC120", "MD", [5]),
        ("8123ABC", "B123ABC", "RO", [0]),
        ("CJ1ZABC", "CJ12ABC", "RO", [3]),
        ("WB1Z345", "WB12345", "PL", [3]),
    ],
)
def test_confusables_are_fixed_by_position(raw: str, text: str, country: str, swapped: list[int]) -> None:
    plate = interpret(raw, [0.8] * len(raw))
    assert plate is not None
    assert (plate.text, plate.country, plate.corrected) == (text, country, True)
    expected = [0.8 * CORRECTED_CONFIDENCE_SCALE if i in swapped else 0.8 for i in range(len(text))]
    assert plate.char_confidences == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "text", "country"),
    [
        ("UAAA1234BB", "AA1234BB", "UA"),  # band code
        ("UA AA 1234 BB I", "AA1234BB", "UA"),  # band code and right border
        ("IAA1234BBI", "AA1234BB", "UA"),  # border both sides
        ("1AA1234BB", "AA1234BB", "UA"),
        ("IAAI234BB", "AA1234BB", "UA"),  # one border stroke plus one swap
        ("MD ABC 123", "ABC123", "MD"),  # not PL DABC123: the band names the country
        ("ABC123I", "ABC123", "MD"),
        ("RO B 123 ABC", "B123ABC", "RO"),
        ("PL WB 12345", "WB12345", "PL"),
        ("UAAAI234B8", "AA1234BB", "UA"),  # not PL AAI23488, which needs one swap fewer
    ],
)
def test_edge_junk_is_stripped(raw: str, text: str, country: str) -> None:
    plate = interpret(raw)
    assert plate is not None
    assert (plate.text, plate.country) == (text, country)


@pytest.mark.parametrize(
    "raw",
    [
        "ABC1234",  # a real trailing 4 is no junk: a foreign plate keeps all its characters
        "IAAI234BBI",  # two border strokes and a swap: too many guesses
        "12345678",  # not 23456TB: a stroke and two swaps
        "AY1234BB",  # Y is not one of Ukraine's 12 letters
        "AZ1234BB",
        "AA1234BZ",
        "0AI2Z4BB",  # three swaps
    ],
)
def test_reads_no_grammar_explains_keep_their_text(raw: str) -> None:
    plate = interpret(raw)
    assert plate == PlateText(raw, None, (1.0,) * len(raw), corrected=False)


@pytest.mark.parametrize(
    ("raw", "countries", "text", "country"),
    [
        ("BLAC123", ("UA", "MD", "RO", "PL"), "BLAC123", "MD"),  # fits MD and PL: order decides
        ("BLAC123", ("PL", "MD"), "BLAC123", "PL"),
        ("AAI234BB", ("PL", "UA"), "AA1234BB", "UA"),  # fewer swaps beats order (PL: AAI23488)
        ("AA1234BB", ("MD", "RO"), "AA1234BB", None),
        ("7ABC123", (), "7ABC123", None),  # US
        ("ABC1D23", (), "ABC1D23", None),  # Brazil (Mercosur)
        ("1234", (), "1234", None),
        ("12345678", (), "12345678", None),
        ("KR1ABC2", ("UA", "MD", "RO", "PL"), "KR1ABC2", None),  # no PL layout has 3 series letters
    ],
)
def test_country_order_and_generic_fallback(
    raw: str, countries: tuple[str, ...], text: str, country: str | None
) -> None:
    plate = interpret(raw, countries=countries)
    assert plate is not None
    assert (plate.text, plate.country) == (text, country)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "A",
        "!!!",
        "123",
        "ABC",
        "TOYOTA",
        "SPORT",
        "DEALER",
        "ABBOTS",  # ABB075 would need three swaps
        "X" * 15,
        "1" * 15,
        "AA1234BB" * 2,
        "12345678901",  # digits only: at most 8
        "ABCDEFGHIJK1",  # mixed: at most 10
    ],
)
def test_not_a_plate(raw: str) -> None:
    assert interpret(raw) is None


@pytest.mark.parametrize(
    ("raw", "text", "country"),
    [
        ("AA1234BB", "AA1234BB", "UA"),
        ("AAI234BB", "AAI234BB", None),
        ("0C1234ET", "0C1234ET", None),
        ("ABC12O", "ABC12O", None),
        ("UAAA1234BB", "AA1234BB", "UA"),  # stripping junk changes no character
        ("IAA1234BBI", "AA1234BB", "UA"),
    ],
)
def test_without_correction_only_exact_fits_get_a_country(raw: str, text: str, country: str | None) -> None:
    plate = interpret(raw, correct=False)
    assert plate == PlateText(text, country, (1.0,) * len(text), corrected=False)


def test_without_correction_words_are_still_rejected() -> None:
    assert interpret("TOYOTA", correct=False) is None


@pytest.mark.parametrize(
    ("raw", "confidences", "expected"),
    [
        ("AA 1234 BB", [0.1, 0.2, 0.0, 0.3, 0.4, 0.5, 0.6, 0.0, 0.7, 0.8], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        ("AA 1234 BB", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        ("UAAA1234BB", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        ("IAA1234BBI", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
        (
            "UA-AAI234BB",
            [0.1, 0.2, 0.0, 0.3, 0.4, 0.6, 0.5, 0.6, 0.7, 0.8, 0.9],
            [0.3, 0.4, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9],
        ),
        ("AA1234BB", [], [1.0] * 8),
    ],
)
def test_char_confidences_follow_the_kept_characters(raw: str, confidences: list[float], expected: list[float]) -> None:
    plate = interpret(raw, confidences)
    assert plate is not None
    assert plate.char_confidences == pytest.approx(expected)


def test_char_confidences_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError, match="char confidences"):
        interpret("AA1234BB", [0.9] * 5)


def test_unknown_country_is_refused() -> None:
    with pytest.raises(ValueError, match="XX"):
        interpret("AA1234BB", countries=("UA", "XX"))


# One example per pattern: class symbol -> a character every class of that symbol allows.
_EXAMPLE_CHAR = {"D": "3", "L": "K", "U": "K", "V": "K", "R": "K"}


@pytest.mark.parametrize(
    ("country", "shape", "prefix"),
    [
        (country, pattern.shape, prefix)
        for country, patterns in GRAMMARS.items()
        for pattern in patterns
        for prefix in pattern.prefixes or ("",)
    ],
)
def test_every_pattern_and_code_is_reachable(country: str, shape: str, prefix: str) -> None:
    example = prefix + "".join(_EXAMPLE_CHAR[c] for c in shape[len(prefix) :])
    plate = interpret(example, countries=(country,))
    assert plate is not None
    assert (plate.text, plate.country, plate.corrected) == (example, country, False)


@pytest.mark.parametrize(
    "raw",
    ["AAI234BB", "UA AA 1234 BB I", "ABC1234", "\u0430\u0430 1234 \u0432\u0432", "8123ABC", "1234"],
)
def test_every_result_is_clean_and_aligned(raw: str) -> None:
    plate = interpret(raw, [0.5] * len(raw))
    assert plate is not None
    assert re.fullmatch(r"[A-Z0-9]+", plate.text)
    assert len(plate.char_confidences) == len(plate.text)
    assert plate.country is None or plate.country in GRAMMARS


@pytest.mark.parametrize(
    ("a", "b", "max_confusable", "expected"),
    [
        ("AA1234BB", "AA1234BB", 1, True),
        ("AA 1234 BB", "aa-1234-bb", 1, True),
        ("\u0410\u04101234\u0412\u0412", "AA1234BB", 0, True),
        ("AA1234BB", "AA1234B8", 1, True),
        ("ABC120", "ABC12O", 1, True),
        ("ABC120", "ABC12O", 0, False),
        ("B123ABC", "8123ABC", 1, True),
        ("ABC4", "ABCA", 1, True),
        ("AA1234BB", "AAI234B8", 1, False),
        ("AA1234BB", "AAI234B8", 2, True),
        ("AA1234BB", "AA1234BC", 1, False),  # B/C is not a confusable pair
        ("AA1234BB", "AA1234B", 1, False),
        ("AA1234BB", "AA1234BBX", 3, False),
        ("", "", 1, False),  # an unreadable crop never hits a watchlist entry
    ],
)
def test_similar(a: str, b: str, max_confusable: int, expected: bool) -> None:
    assert similar(a, b, max_confusable) is expected
    assert similar(b, a, max_confusable) is expected


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("AA1234BB", "AA1234BB", 0),
        ("AA1234BB", "AA1Z34BB", 1),
        ("AA1234BB", "A1234BB", 1),
        ("", "ABC", 3),
        ("ABC", "XYZ", 3),
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


@pytest.mark.parametrize(
    ("a", "b", "same_key"),
    [
        ("AA1234BB", "AA1Z34B8", True),
        ("0BC123", "obc 123", True),
        ("AA1234BC", "AA1234B0", False),
        ("ABC123", "ABC124", False),
    ],
)
def test_confusable_key_groups_what_similar_can_match(a: str, b: str, same_key: bool) -> None:
    assert (confusable_key(a) == confusable_key(b)) is same_key
    if similar(a, b, max_confusable=8):
        assert confusable_key(a) == confusable_key(b)


@pytest.mark.parametrize(
    ("short", "long", "expected"),
    [
        ("IS27RV", "IS27RVT", True),  # cut at the end
        ("S27RVT", "IS27RVT", True),  # cut at the start
        ("A315XT", "BH4315XT", True),  # cut, and 4 read as A
        ("A31SXT", "BH4315XT", False),  # two confusables: another plate
        ("IS27RVT", "IS27RVT", False),  # not shorter
        ("IS28RV", "IS27RVT", False),  # 8 for 7 is no confusable
        ("", "IS27RVT", False),
    ],
)
def test_part_of(short: str, long: str, expected: bool) -> None:
    assert part_of(short, long) is expected
