"""Plate recognition network, in the shape EasyOCR loads as a custom `recog_network`.

EasyOCR imports this file by name from `user_network_directory` and builds
`Model(num_class=..., **network_params)` from `plate_ocr.yaml`; `forward(input, text)` returns
per-column class scores (batch, columns, classes) for its CTC decoder. `text` is unused (CTC).

The network is EasyOCR's own `english_g2` (its VGG feature extractor and two bidirectional LSTMs,
`easyocr.model.vgg_model`, 3.8 M parameters), fine-tuned from english_g2's weights with a 37-class
head (blank + 0-9A-Z) on 32 x 128 plate lines. Why that over our own small CRNN: models/plate_ocr.md.
"""

from __future__ import annotations

import torch
from easyocr.model.vgg_model import Model as EnglishG2


class Model(EnglishG2):
    """english_g2's network; `text` is optional so training can call `model(x)`."""

    def forward(self, input: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(input, text)
