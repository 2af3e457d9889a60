"""Plate grammars: normalising, country fits, confusable fixes, edge junk, rejections, similarity."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from anpr.config import PlatesConfig
from anpr.plates import (
    CORRECTED_CONFIDENCE_SCALE,
    GRAMMARS,
    REGION_SURE,
    UNSURE_BELOW,
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


SURE = 0.99
UNSURE = 0.4


def sure(text: str) -> list[float]:
    return [SURE] * len(text)


def unsure_at(text: str, *positions: int) -> list[float]:
    return [UNSURE if i in positions else SURE for i in range(len(text))]


# Real plates, as printed, of the country the region head names. Grammar countries must fit their
# grammar exactly (checked below); the others pass through the generic rule with the region.
REAL_PLATES = [
    ("AA1234BB", "UA"),
    ("KA0001XX", "UA"),
    ("12345KA", "UA"),
    ("ABC123", "MD"),
    ("CD123AB", "MD"),
    ("B123ABC", "RO"),
    ("CJ12ABC", "RO"),
    ("WB12345", "PL"),
    ("KR1234A", "PL"),
    ("ABC1D23", "BR"),  # Mercosur
    ("ABC1234", "BR"),
    ("AYO9034", "BR"),  # was rewritten to AY09034 to fit Poland
    ("AZJ6991", "BR"),  # lost its 1 to fit Moldova's ABC123
    ("WSQ3021", "BR"),  # Polish-looking (WS district), was rewritten to WS03021
    ("1234AB7", "BY"),
    ("34ABC123", "TR"),
    ("06A1234", "TR"),
    ("35AB123", "TR"),
    ("AB123CD", "GE"),
    ("ABC123", "GE"),
    ("CA1234AB", "BG"),
    ("C1234AB", "BG"),
    ("PB1234AK", "BG"),
    ("ABC123", "HU"),
    ("AAAA123", "HU"),
    ("BA123AB", "SK"),
    ("1AB2345", "CZ"),
    ("2A12345", "CZ"),
    ("ABC123", "LT"),
    ("BAB1234", "DE"),  # Berlin
    ("DAB1234", "DE"),  # Duesseldorf: a D that is no band code
    ("MXY123", "DE"),
    ("BAB123E", "DE"),  # electric
    ("AB123CD", "FR"),
    ("FG456HJ", "FR"),
    ("AB123CD", "IT"),
    ("FG123HK", "IT"),  # fits a Polish layout exactly: was labelled PL
    ("1234BCD", "ES"),
    ("12ABC3", "NL"),
    ("AB12CDE", "GB"),
    ("ABC12D", "SE"),
    ("AB12345", "NO"),
    ("XYZ789", "FI"),
    ("AB12345", "DK"),
    ("GU123AB", "AT"),
    ("ZH123456", "CH"),
    ("1ABC123", "BE"),
    ("AA00AA", "PT"),
    ("ABC1234", "GR"),  # Brazil's old shape, but Greek
    ("191D12345", "IE"),
    ("AB1234", "LV"),
    ("123ABC", "EE"),
    ("LJAB123", "SI"),
    ("ZG1234AB", "HR"),
    ("BG123AB", "RS"),
    ("A12E345", "BA"),
    ("12AB345", "AM"),
    ("10AB123", "AZ"),
    ("7ABC123", "US"),
    ("ABC1234", "US"),
]


@pytest.mark.parametrize(("text", "country"), REAL_PLATES)
def test_sure_reads_of_real_plates_pass_unchanged_with_their_region(text: str, country: str) -> None:
    plate = interpret(text, sure(text), region=country, region_confidence=SURE)
    assert plate == PlateText(text, country, tuple(sure(text)), corrected=False)


def test_the_table_covers_enough_countries() -> None:
    assert len(REAL_PLATES) >= 40
    assert len({country for _, country in REAL_PLATES}) >= 20


@pytest.mark.parametrize(("text", "country"), [(t, c) for t, c in REAL_PLATES if c in GRAMMARS])
def test_real_plates_fit_their_own_grammar_exactly(text: str, country: str) -> None:
    plate = interpret(text, sure(text), countries=(country,))
    assert plate == PlateText(text, country, tuple(sure(text)), corrected=False)


@pytest.mark.parametrize(
    ("text", "region", "region_confidence", "country"),
    [
        ("AA1234BB", None, 1.0, "UA"),  # fits a lane grammar exactly
        ("AA1234BB", "PL", 0.3, "UA"),  # an unsure region does not decide
        ("B12ABC", "DE", 0.2, "RO"),
        ("ABC123", None, 1.0, "MD"),
        ("AYO9034", None, 1.0, None),
        ("AYO9034", "BR", 0.3, "BR"),  # an unsure region its own grammar confirms
        ("AYO9034", "IT", 0.3, None),  # no grammar to confirm it: a guess, no country
        ("AZJ6991", None, 1.0, None),  # its sure 1 is no border stroke
        ("WSQ3021", None, 1.0, None),
        ("AB123CD", None, 1.0, None),  # Italian, D is no Polish series letter
        ("7ABC123", None, 1.0, None),
        ("A41234BB", None, 1.0, None),  # a sure 4 is not swapped into UA's shape
        ("A41234BB", "UA", 0.49, None),  # just below REGION_SURE
    ],
)
def test_sure_reads_without_a_sure_region_are_unchanged(
    text: str, region: str | None, region_confidence: float, country: str | None
) -> None:
    plate = interpret(text, sure(text), region=region, region_confidence=region_confidence)
    assert plate == PlateText(text, country, tuple(sure(text)), corrected=False)


@pytest.mark.parametrize(
    ("raw", "unsure", "region", "text"),
    [
        ("A41234BB", [1], "UA", "AA1234BB"),
        ("0A1234BB", [0], "UA", "OA1234BB"),
        ("AA12S4BB", [4], "UA", "AA1254BB"),
        ("ABC12S", [5], "MD", "ABC125"),
        ("ABC1Z3", [4], "MD", "ABC123"),
        ("8123ABC", [0], "RO", "B123ABC"),
        ("WB1Z345", [3], "PL", "WB12345"),
        ("AY09034", [2], "BR", "AYO9034"),
        ("1234A87", [5], "BY", "1234AB7"),
        ("34A8C123", [3], "TR", "34ABC123"),
        ("CA1Z34AB", [3], "BG", "CA1234AB"),
        ("BAB12Z4", [5], "DE", "BAB1224"),
        ("18A2345", [1], "CZ", "1BA2345"),
    ],
)
def test_unsure_confusables_are_fixed_toward_the_regions_grammar(
    raw: str, unsure: list[int], region: str, text: str
) -> None:
    plate = interpret(raw, unsure_at(raw, *unsure), region=region)
    assert plate is not None
    assert (plate.text, plate.country, plate.corrected) == (text, region, True)
    expected = [UNSURE * CORRECTED_CONFIDENCE_SCALE if i in unsure else SURE for i in range(len(text))]
    assert plate.char_confidences == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "unsure", "region", "text", "country"),
    [
        ("A41234BB", [1], None, "AA1234BB", "UA"),  # no region: the lane countries, as before
        ("A41234BB", [1], "PL", "AA1234BB", "UA"),
        ("ABC12S", [5], "DE", "ABC125", "MD"),
    ],
)
def test_without_a_sure_region_unsure_confusables_fit_the_lane_countries(
    raw: str, unsure: list[int], region: str | None, text: str, country: str
) -> None:
    plate = interpret(raw, unsure_at(raw, *unsure), region=region, region_confidence=0.3)
    assert plate is not None
    assert (plate.text, plate.country, plate.corrected) == (text, country, True)


@pytest.mark.parametrize(
    ("raw", "region", "country"),
    [
        ("A41234BB", "UA", "UA"),
        ("0A1234BB", "UA", "UA"),
        ("ABC12S", "MD", "MD"),
        ("ABC12S", None, None),
        ("WB1Z345", "PL", "PL"),
    ],
)
def test_sure_confusables_are_kept(raw: str, region: str | None, country: str | None) -> None:
    plate = interpret(raw, sure(raw), region=region)
    assert plate == PlateText(raw, country, tuple(sure(raw)), corrected=False)


@pytest.mark.parametrize(
    ("raw", "region", "country"),
    [
        ("AA1234BB", "BG", "UA"),  # no Bulgarian province AA: BG's grammar rejects it, UA's fits as read
        ("BH5417HP", "BG", "BG"),  # Vidin: valid in Bulgaria, so the region stands
        ("FG123HK", "IT", "IT"),  # Italy has no grammar here: nothing contradicts the region
        ("XY12ABC", "BG", "BG"),  # BG rejects it and no lane country fits: the region stays
    ],
)
def test_a_sure_region_whose_grammar_rejects_the_read_is_refined_by_a_lane_grammar(
    raw: str, region: str, country: str
) -> None:
    plate = interpret(raw, [0.99] * len(raw), region=region, region_confidence=0.99)
    assert plate is not None and plate.text == raw and not plate.corrected
    assert plate.country == country


def test_a_sure_read_no_grammar_explains_and_no_plate_anywhere_is_dropped() -> None:
    assert interpret("BIZABC", unsure_at("BIZABC", 1, 2), region="RO") == PlateText(
        "B12ABC", "RO", (SURE, *(UNSURE * CORRECTED_CONFIDENCE_SCALE,) * 2, SURE, SURE, SURE), corrected=True
    )
    assert interpret("BIZABC", sure("BIZABC"), region="RO") is None  # letters only: no plate anywhere


@pytest.mark.parametrize(
    ("raw", "region", "lane_text", "lane_country"),
    [
        ("AYO9034", "BR", "AY09034", "PL"),
        ("WSQ3021", "BR", "WS03021", "PL"),
        ("AZJ6991", "BR", "AZJG991", "PL"),
        ("FG123HK", "IT", "FG123HK", "PL"),
        ("A41234BB", "BR", "AA1234BB", "UA"),  # BR's grammar does not fit: generic, still BR
        ("A41234BB", "FR", "AA1234BB", "UA"),  # no French grammar: nothing to correct toward
        ("B12ABC1", "IT", "B12ABC", "RO"),  # no stripping toward another country either
    ],
)
def test_unsure_reads_are_never_bent_into_another_countrys_shape(
    raw: str, region: str, lane_text: str, lane_country: str
) -> None:
    confidences = [0.5] * len(raw)
    plate = interpret(raw, confidences, region=region)
    assert plate == PlateText(raw, region, tuple(confidences), corrected=False)
    # Without the region, the lane grammars would have bent it: the region is what prevents it.
    lane = interpret(raw, confidences)
    assert lane is not None
    assert (lane.text, lane.country) == (lane_text, lane_country)


@pytest.mark.parametrize(
    ("raw", "confidences", "region", "text"),
    [
        ("AA1234BBI", unsure_at("AA1234BBI", 8), "UA", "AA1234BB"),  # unsure border stroke: stripped
        ("AA1234BBI", sure("AA1234BBI"), "UA", "AA1234BBI"),  # sure: a character, kept
        ("1AA1234BB", unsure_at("1AA1234BB", 0), "UA", "AA1234BB"),
        ("1AA1234BB", sure("1AA1234BB"), "UA", "1AA1234BB"),
        ("ABC123L", unsure_at("ABC123L", 6), "MD", "ABC123"),
        ("ABC123L", sure("ABC123L"), "MD", "ABC123L"),
        ("UAAA1234BB", sure("UAAA1234BB"), "UA", "AA1234BB"),  # band code: printed, stripped however sure
        ("MDABC123", sure("MDABC123"), "MD", "ABC123"),
        ("BY1234AB7", sure("BY1234AB7"), "BY", "1234AB7"),
        ("TR34ABC123", sure("TR34ABC123"), "TR", "34ABC123"),
        # Hungary's band H: HABC123 is no 2022 plate (those still start with A), so the H goes.
        ("HABC123", sure("HABC123"), "HU", "ABC123"),
        # Germany's band D: DBNAB1234 is 9 characters, no German plate, so the D goes (Bonn BN AB
        # 1234). DAB1234 stays whole: it is Duesseldorf D AB 1234, and whole fits come first.
        ("DBNAB1234", sure("DBNAB1234"), "DE", "BNAB1234"),
        ("DAB1234", sure("DAB1234"), "DE", "DAB1234"),
        ("UAAB123CD", sure("UAAB123CD"), "UA", "UAAB123CD"),  # the rest fits no UA layout: kept
        ("PLWB12345", sure("PLWB12345"), "UA", "PLWB12345"),  # not the region's band code: kept
    ],
)
def test_edge_stripping(raw: str, confidences: list[float], region: str, text: str) -> None:
    plate = interpret(raw, confidences, region=region)
    assert plate is not None
    assert (plate.text, plate.country, plate.corrected) == (text, region, False)


def test_an_unsure_region_only_breaks_ties_among_the_lane_countries() -> None:
    read = ("BLAC123", sure("BLAC123"))  # fits MD and PL exactly
    assert (p := interpret(*read)) is not None and p.country == "MD"
    assert (p := interpret(*read, region="PL", region_confidence=0.3)) is not None and p.country == "PL"
    assert (p := interpret(*read, region="PL", region_confidence=0.3, countries=("UA", "MD"))) is not None
    assert p.country == "MD"  # PL is no lane country here


def test_no_char_confidences_count_as_unsure() -> None:
    assert interpret("A41234BB", region="UA") == PlateText(
        "AA1234BB", "UA", (1.0, CORRECTED_CONFIDENCE_SCALE, *(1.0,) * 6), corrected=True
    )


def test_thresholds_are_parameters() -> None:
    confidences = [0.95] * 8
    assert (p := interpret("A41234BB", confidences, region="UA")) is not None and p.text == "A41234BB"
    assert (p := interpret("A41234BB", confidences, region="UA", unsure_below=0.96)) is not None
    assert p.text == "AA1234BB"
    at_threshold = [UNSURE_BELOW] * 8  # as sure as it needs to be: kept
    assert (p := interpret("A41234BB", at_threshold, region="UA")) is not None and p.text == "A41234BB"
    # A region below `region_sure` is only a hint: the lane grammars fit the read (IT has no grammar).
    assert (p := interpret("AYO9034", [0.5] * 7, region="IT", region_confidence=0.6)) is not None
    assert (p.text, p.country) == ("AYO9034", "IT")
    assert (p := interpret("AYO9034", [0.5] * 7, region="IT", region_confidence=0.6, region_sure=0.7)) is not None
    assert (p.text, p.country) == ("AY09034", "PL")


def test_an_unsure_region_with_a_grammar_wins_only_with_fewer_guesses() -> None:
    # Brazilian, its 5 unsure: as read it fits BR; a Polish ADLS671 would need a swap.
    unsure_5 = [1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 1.0]
    assert (p := interpret("ADL5671", unsure_5, region="BR", region_confidence=0.2)) is not None
    assert (p.text, p.country, p.corrected) == ("ADL5671", "BR", False)
    # Moldovan ABC123 fits LT's LLLDDD as well: an equal fit stays the lane country's.
    assert (p := interpret("ABC123", [1.0] * 6, region="LT", region_confidence=0.3)) is not None
    assert (p.text, p.country) == ("ABC123", "MD")


def test_config_defaults_are_the_modules_and_bounded() -> None:
    cfg = PlatesConfig()
    assert (cfg.unsure_below, cfg.region_sure) == (UNSURE_BELOW, REGION_SURE)
    for field in ("unsure_below", "region_sure"):
        with pytest.raises(ValidationError):
            PlatesConfig.model_validate({field: 1.5})
        with pytest.raises(ValidationError):
            PlatesConfig.model_validate({field: -0.1})
    with pytest.raises(ValidationError, match="XX"):
        PlatesConfig(countries=["UA", "XX"])


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
        ("IAA1234BBI", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.5], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
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
_EXAMPLE_CHAR = {"D": "3", "L": "K", "U": "K", "B": "K", "V": "K", "R": "K", "E": "E"}


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
