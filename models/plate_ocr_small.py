"""The small plate recognition network (our CRNN), in the shape EasyOCR loads as a custom `recog_network`.

It reads every line first; plate_ocr re-reads the lines it is unsure of (anpr/ocr_networks.py).
EasyOCR imports this file by name from `user_network_directory` and builds
`Model(num_class=..., **network_params)` from `plate_ocr_small.yaml`; `forward(input, text)` must return
per-column class scores (batch, columns, classes) for its CTC decoder. `text` is unused (CTC).

Why this shape: a plate is one short line of large, evenly spaced glyphs, so a small VGG-style
stack (0.66 M parameters with the LSTM, ~40x fewer multiply-adds than `english_g2`) plus one
bidirectional LSTM reads most plates, in ~1 ms a line on OpenVINO (~5 ms on torch). The height is pooled
away completely, so any input width works (EasyOCR pads batches to a common width).
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Model(nn.Module):
    """Gray 32 x W image in [-1, 1] -> W/4 columns of scores over blank + `num_class - 1` characters."""

    def __init__(self, input_channel: int, output_channel: int, hidden_size: int, num_class: int) -> None:
        super().__init__()
        c = output_channel
        self.features = nn.Sequential(
            *_block(input_channel, c // 4),
            nn.MaxPool2d(2, 2),  # 16 x W/2
            *_block(c // 4, c // 2),
            nn.MaxPool2d(2, 2),  # 8 x W/4
            *_block(c // 2, c),
            *_block(c, c),
            nn.MaxPool2d((2, 1), (2, 1)),  # 4 x W/4: keep columns, CTC needs ~2 per character
            *_block(c, c),
            nn.MaxPool2d((2, 1), (2, 1)),  # 2 x W/4
        )
        self.rnn = nn.LSTM(c, hidden_size, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden_size, num_class)

    def forward(self, input: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(input).mean(dim=2)  # (B, C, W/4): height pooled away
        out, _ = self.rnn(f.permute(0, 2, 1))
        return self.head(out)
