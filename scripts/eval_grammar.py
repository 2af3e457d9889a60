"""What the grammar correction (`plates.correct`) gains and loses, on vs off, one run.

    .venv/bin/python scripts/eval_grammar.py

- Real held-out crops (eval_ocr.py's sets), read by the default reader, interpreted with the lane
  countries' grammars (UA, MD, RO, PL) and the reader's region, as `anpr read` does: exact plates
  with the correction on and off. Foreign plates (BR, US, EU) must lose nothing to it.
- Synthetic UA and MD plate texts (anpr.synth) with one confusable injected where a grammar can
  tell (a letter read as its digit look-alike or back) at an unsure confidence, the rest sure, the
  region sure or unknown: exact plates on and off. This is what the correction is for.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from eval_ocr import heldout_crops  # noqa: E402

from anpr.config import load_config  # noqa: E402
from anpr.ocr import make_reader  # noqa: E402
from anpr.plates import interpret, look_alike, normalise  # noqa: E402
from anpr.synth import random_plate_text  # noqa: E402

SETS = ("br-plate-crops", "openalpr-us", "eu-plate-crops")


def injected(style: str, n: int, seed: int = 0) -> list[tuple[str, str, tuple[float, ...]]]:
    """(true text, read with one confusable swapped, confidences) for `n` plates of `style`."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        text = normalise(random_plate_text(style, rng))
        swappable = [i for i, c in enumerate(text) if look_alike(c)]
        if not swappable:
            continue
        i = int(rng.choice(swappable))
        read = text[:i] + str(look_alike(text[i])) + text[i + 1 :]
        confs = tuple(0.5 if k == i else 0.99 for k in range(len(text)))
        out.append((text, read, confs))
    return out


def main() -> None:
    cfg = load_config()
    countries = cfg.plates.countries
    reader = make_reader(cfg.ocr)
    print(f"lane countries {countries}\n")
    print("| set | plates | exact, correction off | exact, correction on |")
    print("|---|---|---|---|")
    for name in SETS:
        crops = heldout_crops(name)
        reads = reader.read_batch([c for _, c, _ in crops])
        hits = {False: 0, True: 0}
        for (_, _, label), read in zip(crops, reads, strict=True):
            for correct in hits:
                fit = read and interpret(
                    read.text,
                    read.char_confidences,
                    countries,
                    correct,
                    region=read.country,
                    region_confidence=read.country_confidence,
                )
                hits[correct] += bool(fit) and fit.text == label
        print(f"| {name} (held-out crops) | {len(crops)} | {hits[False]} | {hits[True]} |")
    for style in ("UA", "MD"):
        plates = injected(style, 500)
        for region, region_confidence in ((style, 0.99), (None, 0.0)):
            hits = {False: 0, True: 0}
            for text, read, confs in plates:
                for correct in hits:
                    fit = interpret(read, confs, countries, correct, region=region, region_confidence=region_confidence)
                    hits[correct] += bool(fit) and fit.text == text
            label = f"synthetic {style}, one unsure confusable, region {region or 'unknown'}"
            print(f"| {label} | {len(plates)} | {hits[False]} | {hits[True]} |")


if __name__ == "__main__":
    main()
