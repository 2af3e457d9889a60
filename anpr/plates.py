"""Turn raw OCR text into a plate: normalise, confirm the country by its grammar, fix unsure confusables.

The OCR network reports, per read, a confidence per character and a region (country) with its
probability. OCR on plates confuses O/0, I/1, B/8... and reads the country band or the border as
extra characters (shared/NOTES.md). A grammar knows, per position, whether a letter or a digit
belongs there, so it can undo those confusions where the network was unsure, and tell a plate from
a sticker or a dealer's word. It only ever bends a read toward its own country's grammar: the sure
region's, else one of the lane's countries; a read it cannot explain keeps its text, so a foreign
plate still matches a watchlist entry typed as printed.

Grammars are data: one tuple of `Pattern`s per country in `GRAMMARS`, standard civilian plates
only (sources: each country's registration rules as summarised in the Wikipedia article
"Vehicle registration plates of <country>"). Anything else of that country (diplomatic, military,
trailer, temporary, personalised plates) and every other country pass through the generic rule.

- UA (DSTU 3650:2004): `AA1234BB`, and the 1995 series `12345AA` (still on the road), letters
  limited to the 12 Latin/Cyrillic look-alikes.
- MD: 2015+ `ABC123` (also pre-2015 Chisinau `C AB 123`, `K AB 123` and government `RM P 123`,
  the same shape); pre-2015 district plates `BL AB 123` (district codes listed); state series
  `RM 1234`, `FA 1234`, `DG 1234`, `MAI 1234`; diplomatic `CD 123 A(A)` (CD, TC, TS, CA).
- RO: Bucharest `B 12 ABC`, `B 123 ABC`; counties `CJ 12 ABC` (county codes listed).
- PL: the 14 standard layouts (2-letter district + 5, 3-letter district + 4 or 5), series letters
  without B D I O Z.
- BR: `ABC1234` and Mercosur `ABC1D23`; not a lane country (scores `anpr eval --countries BR`).
- BY: 2004 series `1234 AB-7` (region digit last), the 12 look-alike letters.
- TR: province 01-81, then 1 letter + 4-5 digits, 2 + 3-4 or 3 + 2-3 (`34 ABC 123`).
- GE: 2004+ `AB-123-CD`, older `ABC-123`.
- BG: province code (listed) + 4 digits + 2 letters (`CA 1234 AB`), letters limited to the 12
  Cyrillic ones with a Latin twin.
- HU: `ABC-123`, and 2022+ `AA AA-123` (still at first letter A, see `GRAMMARS`).
- SK: `BA-123AB`. CZ: `1AB 2345` and `1A1 2345`. LT: `ABC 123`.
- DE (FZV): district and series letters (2-5 in all, the split is not printed), 1-4 digits, an
  optional E (electric) or H (historic); at most 8 characters. Umlaut districts (TÖL) are not covered.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DEFAULT_COUNTRIES: tuple[str, ...] = ("UA", "MD", "RO", "PL")

# A character read with less confidence than this is one the grammar may swap for its look-alike
# or strip as a border stroke; anything surer is what the network saw and stays. Below 0.9 the
# other glyphs (a look-alike, mostly) hold a tenth of the slot's probability or more: a real doubt.
# Lower keeps more misreads as read; higher lets the grammar rewrite characters the network had
# right (a foreign plate bent into a lane country's shape).
UNSURE_BELOW = 0.9

# The region head's probability from which its country is taken as the plate's: the read is then
# fitted to that country's grammar alone. Raising it sends more reads to the lane countries'
# grammars, which may bend a foreign plate into their shape (the bug this guards against);
# lowering it trusts a misjudged region more: its plate gets the wrong country and loses the
# corrections of its real grammar. 0.5: the region is more likely right than all others together.
REGION_SURE = 0.5

# Guesses allowed per read: swapped characters plus border strokes stripped from the edges. More
# and the read is more guess than text: a word (ABBOTS -> ABB075) or a row of digits (12345678 ->
# 23456TB) would pass as a plate. Raising it rescues worse reads; the tracker's vote across
# frames already recovers most of them.
MAX_GUESSES = 2

# A swapped character is the grammar's guess, not what the OCR saw. Halving its confidence lets
# a direct read of that position outvote the guess in the tracker; 1.0 would trust both equally.
CORRECTED_CONFIDENCE_SCALE = 0.5

# Junk the OCR reads at the edges: the country's international vehicle code on the band (left),
# the plate border read as a stroke on either side. Only those are stripped: dropping any other
# character would let a foreign plate lose a real one and pose as ours (German B AB 1234 ->
# Moldovan BAB123).
MAX_EDGE_JUNK = 2
_BORDER = frozenset("I1L")
# The code printed on the left band of each grammar country's plates (its international vehicle
# code). Brazil has none there: BRASIL runs above the characters.
_BAND_CODES = {
    "UA": "UA", "MD": "MD", "RO": "RO", "PL": "PL", "BY": "BY", "TR": "TR", "GE": "GE",
    "BG": "BG", "HU": "H", "SK": "SK", "CZ": "CZ", "LT": "LT", "DE": "D",
}  # fmt: skip

_ALNUM = frozenset(string.ascii_uppercase + string.digits)

# Cyrillic capitals that look like Latin ones (the 12 on Ukrainian plates) -> Latin. Watchlists
# typed on a Cyrillic keyboard and Cyrillic OCR models must meet Latin reads on the same text.
_CYRILLIC_LOOKALIKES = "\u0410\u0412\u0421\u0415\u041d\u0406\u041a\u041c\u041e\u0420\u0422\u0425"
_CYRILLIC = dict(zip(_CYRILLIC_LOOKALIKES, "ABCEHIKMOPTX", strict=True))

# Letter read where the grammar wants a digit. Each pair is the same glyph at low resolution:
# O, Q, D -> 0: round bowls (Q's tail and D's straight side vanish when blurred);
# I, L -> 1: a single upright stroke (L's foot is faint); Z -> 2: the same top bar and diagonal;
# S -> 5 and G -> 6: the same open curve; B -> 8: two stacked bowls; T -> 7: top bar and one stem.
_TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "G": "6", "B": "8", "T": "7"}
# Digit read where the grammar wants a letter: the reverse pairs, plus 4 -> A (closed-top 4 and A
# share the apex and crossbar in plate fonts). 0 maps to O only: O is far more common than Q or D.
_TO_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B", "4": "A", "7": "T"}
_CONFUSABLE = frozenset(frozenset(pair) for pair in (*_TO_DIGIT.items(), *_TO_LETTER.items()))


def look_alike(ch: str) -> str | None:
    """The digit a letter is confused with, or the letter a digit is; None: it has no look-alike."""
    return _TO_DIGIT.get(ch) if ch.isalpha() else _TO_LETTER.get(ch)


_LETTERS = frozenset(string.ascii_uppercase)
# Per-position character classes used in `Pattern.shape`.
_CLASSES: dict[str, frozenset[str]] = {
    "D": frozenset(string.digits),
    "L": _LETTERS,
    # Ukraine and Belarus: only the letters that look the same in Cyrillic and Latin.
    "U": frozenset("ABCEHIKMOPTX"),
    # Bulgaria: the same idea, with Y (У) instead of I.
    "B": frozenset("ABCEHKMOPTXY"),
    # Poland, first letter: voivodeship (A I J M V X Y: codes added since 2022 for cities that ran
    # out of numbers).
    # H (uniformed services) and U (army) are not civilian series; Q is never used.
    "V": _LETTERS - frozenset("HQU"),
    # Poland, series part: B D I O Z are never issued there because they read as 8 0 1 0 2.
    "R": _LETTERS - frozenset("BDIOZQ"),
    # Germany, optional last character: E (electric) or H (historic).
    "E": frozenset("EH"),
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """One plate layout: a class symbol (see _CLASSES) per character, optionally pinned to codes.

    `prefixes`, when set, lists the codes the plate must start with (a county, a district): they
    stop a random word of the right shape from passing as that country's plate.
    """

    shape: str
    prefixes: tuple[str, ...] = ()


def _split(spaced: str) -> tuple[str, ...]:
    """Long code tables read better as one spaced string than as a column of quoted pairs."""
    return tuple(spaced.split())


_RO_COUNTIES = _split(
    "AB AG AR BC BH BN BR BT BV BZ CJ CL CS CT CV DB DJ GJ GL GR HD HR IF IL IS MH MM MS NT OT "
    "PH SB SJ SM SV TL TM TR VL VN VS"
)
# Two-letter district codes of pre-2015 Moldovan plates (Chisinau's one-letter C and K plates
# have the shape of the current ABC123 and need no list).
_MD_DISTRICTS = _split(
    "AN BE BL BR BS CC CG CH CL CM CN CO CR CS CT CU DB DN DR ED FL FR GE GL GR HN IL LV NS OC "
    "OR RB RS SD SG SL SR ST SV TA TL UN"
)
_TR_PROVINCES = tuple(f"{n:02d}" for n in range(1, 82))
# Bulgarian provinces, Cyrillic codes in their Latin twins (C, CA, CB: Sofia city).
_BG_PROVINCES_1 = _split("A B C E H K M P T X Y")
_BG_PROVINCES_2 = _split("BH BP BT CA CB CC CH CM CO CT EB EH KH OB PA PB PK PP TX")

GRAMMARS: dict[str, tuple[Pattern, ...]] = {
    "UA": (Pattern("UUDDDDUU"), Pattern("DDDDDUU")),
    "MD": (
        Pattern("LLLDDD"),
        Pattern("LLLLDDD", _MD_DISTRICTS),
        Pattern("LLDDDD", _split("RM FA DG")),
        Pattern("LLLDDDD", _split("MAI MIC")),
        Pattern("LLDDDL", _split("CD TC TS CA")),
        Pattern("LLDDDLL", _split("CD TC TS CA")),
    ),
    "RO": (
        Pattern("LDDLLL", ("B",)),
        Pattern("LDDDLLL", ("B",)),
        Pattern("LLDDLLL", _RO_COUNTIES),
    ),
    "BR": (Pattern("LLLDDDD"), Pattern("LLLDLDD")),
    # Two-letter districts are always followed by a digit, so the two families never collide.
    "PL": tuple(
        Pattern(shape)
        for shape in _split(
            "VLDDDDD VLDDDDR VLDDDRR VLDRDDD VLDRRDD "
            "VLLRDDD VLLDDRR VLLDRDD VLLDDRD VLLDRRD VLLRRDD VLLDDDDD VLLDDDDR VLLDDDRR"
        )
    ),
    "BY": (Pattern("DDDDUUD"),),
    "TR": tuple(
        Pattern("DD" + "L" * letters + "D" * digits, _TR_PROVINCES)
        for letters, digits in ((1, 4), (1, 5), (2, 3), (2, 4), (3, 2), (3, 3))
    ),
    "GE": (Pattern("LLDDDLL"), Pattern("LLLDDD")),
    "BG": (Pattern("BDDDDBB", _BG_PROVINCES_1), Pattern("BBDDDDBB", _BG_PROVINCES_2)),
    # The 2022 series is issued in order from AA AA-001: pinning its first letter keeps the band's H
    # before an ABC-123 plate from reading as one.
    "HU": (Pattern("LLLDDD"), Pattern("LLLLDDD", ("A",))),
    "SK": (Pattern("LLDDDLL"),),
    "CZ": (Pattern("DLLDDDD"), Pattern("DLDDDDD")),
    "LT": (Pattern("LLLDDD"),),
    "DE": tuple(
        Pattern("L" * letters + "D" * digits + suffix)
        for letters in range(2, 6)
        for digits in range(1, 5)
        for suffix in ("", "E")
        if letters + digits + len(suffix) <= 8
    ),
}


@dataclass(frozen=True, slots=True)
class PlateText:
    """A read that passed a grammar (or the generic rule), ready for the tracker to vote on."""

    text: str
    country: str | None
    char_confidences: tuple[float, ...]
    corrected: bool


@dataclass(frozen=True, slots=True)
class _Fit:
    text: str
    changed: tuple[int, ...]
    country: str
    start: int  # where `text` begins in the normalised read
    key: tuple[int, int, int, int]  # corrections, strip guesses, stripped, country rank: lower wins


def _normalise_indexed(raw: str) -> tuple[str, list[int]]:
    """Normalised text plus, per output char, the index of the raw char it came from."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(raw):
        upper = ch.upper()
        for c in _CYRILLIC.get(upper, upper):
            if c in _ALNUM:
                chars.append(c)
                index.append(i)
    return "".join(chars), index


def normalise(raw: str) -> str:
    """Upper-case A-Z0-9 only, Cyrillic look-alikes as Latin: the one spelling every stage compares."""
    return _normalise_indexed(raw)[0]


def _aligned(raw: str, char_confidences: Sequence[float]) -> tuple[str, tuple[float, ...]]:
    """Normalise and keep the confidences of the characters that survive.

    Confidences may be per raw character (the `PlateRead` contract) or already per normalised
    character; none at all means no per-character evidence, so every character weighs 1.0.
    """
    text, index = _normalise_indexed(raw)
    if not char_confidences:
        return text, (1.0,) * len(text)
    if len(char_confidences) == len(raw):
        return text, tuple(float(char_confidences[i]) for i in index)
    if len(char_confidences) == len(text):
        return text, tuple(float(c) for c in char_confidences)
    raise ValueError(
        f"{len(char_confidences)} char confidences for {raw!r}: need one per character "
        f"({len(raw)}) or per normalised character ({len(text)})"
    )


def _fit(text: str, unsure: Sequence[bool], pattern: Pattern, max_swaps: int) -> tuple[str, tuple[int, ...]] | None:
    """`text` made to fit `pattern` with at most `max_swaps` swaps of unsure characters, and the
    swapped positions."""
    if len(text) != len(pattern.shape):
        return None
    out: list[str] = []
    changed: list[int] = []
    for i, (ch, cls) in enumerate(zip(text, pattern.shape, strict=True)):
        allowed = _CLASSES[cls]
        if ch not in allowed:
            swap = look_alike(ch)
            if not unsure[i] or swap is None or swap not in allowed or len(changed) == max_swaps:
                return None
            ch = swap
            changed.append(i)
        out.append(ch)
    fixed = "".join(out)
    if pattern.prefixes and not fixed.startswith(pattern.prefixes):
        return None
    return fixed, tuple(changed)


def _edge_junk(left: str, right: str, unsure: Sequence[bool], country: str) -> int | None:
    """Guesses spent stripping `left` and `right` off a `country` plate; None: they are no junk.

    `unsure` flags the stripped characters, left ones first. A band code is printed, not guessed: it
    costs nothing, however sure the read. Each border stroke costs a guess, like a swapped character,
    and only an unsure one goes: a stroke the network is sure of is a character of the plate.
    """
    if left and left == _BAND_CODES.get(country):
        unsure = unsure[len(left) :]
        left = ""
    if not _BORDER.issuperset(left + right) or not all(unsure):
        return None
    return len(left + right)


def _fits(text: str, unsure: Sequence[bool], countries: Sequence[str], correct: bool, strip: bool) -> Iterator[_Fit]:
    """Every way `text` (with `strip`: `text` minus edge junk) fits one of `countries`' grammars."""
    for left in range(MAX_EDGE_JUNK + 1):
        for right in range(MAX_EDGE_JUNK + 1):
            if (left + right > 0) != strip:
                continue
            end = len(text) - right
            for rank, country in enumerate(countries):
                cost = _edge_junk(text[:left], text[end:], (*unsure[:left], *unsure[end:]), country)
                if cost is None or cost > MAX_GUESSES:
                    continue
                max_swaps = MAX_GUESSES - cost if correct else 0
                for pattern in GRAMMARS[country]:
                    if (fit := _fit(text[left:end], unsure[left:end], pattern, max_swaps)) is not None:
                        fixed, changed = fit
                        yield _Fit(fixed, changed, country, left, (len(changed), cost, left + right, rank))


def _generic(text: str) -> bool:
    """A plate of a country we have no grammar for: letters and digits mixed, or digits only.

    Pure words (TOYOTA, DEALER) fail: nearly every plate layout in the world has a digit.
    """
    if text.isdigit():
        return 4 <= len(text) <= 8
    return 4 <= len(text) <= 10 and any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def interpret(
    raw: str,
    char_confidences: Sequence[float] = (),
    countries: Sequence[str] = DEFAULT_COUNTRIES,
    correct: bool = True,
    *,
    region: str | None = None,
    region_confidence: float = 1.0,
    unsure_below: float = UNSURE_BELOW,
    region_sure: float = REGION_SURE,
) -> PlateText | None:
    """A raw OCR read as a plate of its country; None: no plate.

    The grammars tried are the region's alone when the region head is sure of it (`region_confidence
    >= region_sure`; none if it has no grammar), else `countries` in order (an unsure region first
    if it is one of them, else last if it has a grammar). Only characters read with less than
    `unsure_below` confidence may be swapped for a look-alike or stripped as a border stroke; the
    band code of the country tried is stripped however sure. Best is fewest swaps, then fewest
    guessed and fewest stripped edge characters, then country order; stripping is tried only when
    the whole read fits no grammar, so a plate never loses a character to become another one. A read
    no grammar explains keeps its text if it is a plate anywhere (`_generic`), with the sure region
    (else None) as its country. `correct=False` keeps only exact fits (stripping changes no
    character).

    No `char_confidences` means no per-character evidence: every character counts as unsure, as
    all were before the network reported confidences (an older reader still gets corrections),
    and each weighs 1.0 in the result.
    """
    unknown = [c for c in countries if c not in GRAMMARS]
    if unknown:
        raise ValueError(f"no plate grammar for {unknown}; known: {sorted(GRAMMARS)}")
    text, confs = _aligned(raw, char_confidences)
    unsure = tuple(c < unsure_below for c in confs) if char_confidences else (True,) * len(text)
    sure_region = region if region_confidence >= region_sure else None
    if sure_region is not None:
        tried: Sequence[str] = (sure_region,) if sure_region in GRAMMARS else ()
    else:
        # An unsure region with a grammar of its own is tried after the lane countries: it wins only
        # where it needs fewer guesses (a Brazilian ADL5671 whose unsure 5 a Polish ADLS671 would
        # swap), and an equal fit stays the lane country's.
        tried = sorted(countries, key=lambda c: c != region)
        if region in GRAMMARS and region not in tried:
            tried.append(region)
    best = _best(text, unsure, tried, correct, strips=(False, True))
    if best is None and sure_region in GRAMMARS:
        # The region's own grammar rejects the read, so the region head misjudged the plate (a lane
        # country's plate taken for its neighbour's). A lane country's grammar that the read fits
        # exactly, as read and whole, names it instead; nothing is changed to make it fit.
        best = _best(text, unsure, [c for c in countries if c != sure_region], correct=False, strips=(False,))
    if best is not None:
        kept = list(confs[best.start : best.start + len(best.text)])
        for i in best.changed:
            kept[i] *= CORRECTED_CONFIDENCE_SCALE
        return PlateText(best.text, best.country, tuple(kept), bool(best.changed))
    if _generic(text):
        return PlateText(text, sure_region, confs, False)
    return None


def _best(
    text: str, unsure: Sequence[bool], countries: Sequence[str], correct: bool, strips: Sequence[bool]
) -> _Fit | None:
    """The best fit of `text` to `countries`' grammars: whole first, then (if allowed) stripped."""
    for strip in strips:
        best = min(_fits(text, unsure, countries, correct, strip), key=lambda f: f.key, default=None)
        if best is not None:
            return best
    return None


def similar(a: str, b: str, max_confusable: int = 1) -> bool:
    """Same plate after `normalise`, allowing a few letter/digit confusions (O/0, B/8...).

    For watchlist hits and merging tracks: two reads of one plate differ mostly by those pairs.
    Any other difference, or a different length, is another plate. Empty text matches nothing,
    so an unreadable crop never hits a watchlist entry.
    """
    na, nb = normalise(a), normalise(b)
    if not na or len(na) != len(nb):
        return False
    diffs = [(x, y) for x, y in zip(na, nb, strict=True) if x != y]
    return len(diffs) <= max_confusable and all(frozenset(d) in _CONFUSABLE for d in diffs)


def part_of(short: str, long: str) -> bool:
    """True when `short` is a run of `long`'s characters, allowing one confusable (4/A, 8/B...).

    A crop cut by the frame's edge reads as such a run of the whole plate ("IS27RV" of IS27RVT).
    """
    if not short or len(short) >= len(long):
        return False
    for start in range(len(long) - len(short) + 1):
        diffs = [(x, y) for x, y in zip(short, long[start : start + len(short)], strict=True) if x != y]
        if not diffs or (len(diffs) == 1 and frozenset(diffs[0]) in _CONFUSABLE):
            return True
    return False


def _confusable_groups() -> dict[str, str]:
    """Each character -> the smallest member of its confusable group (union of the swap pairs)."""
    parent = {c: c for c in _ALNUM}

    def root(c: str) -> str:
        while parent[c] != c:
            c = parent[c]
        return c

    for pair in _CONFUSABLE:
        a, b = sorted(root(c) for c in pair)
        parent[b] = a
    return {c: root(c) for c in _ALNUM}


_GROUP = _confusable_groups()


def confusable_key(text: str) -> str:
    """`normalise`d text with every confusable folded to one character.

    Reads that `similar` can match share this key, so an index keyed by it finds the candidates
    without comparing against every stored plate.
    """
    return "".join(_GROUP[c] for c in normalise(text))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: inserted, dropped or replaced characters."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
