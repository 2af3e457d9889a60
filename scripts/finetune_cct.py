"""Fine-tune the CCT plate reader (models/cct_xs_v2_global.onnx) on the real training crops.

    .venv/bin/python scripts/finetune_cct.py --out .cache/cct_ft/cct_ft.onnx [--epochs 8 --lr 1e-4]

Why: the released CCT was trained on plates of 65+ countries but never on this project's cameras;
on br-plate-crops it misreads the worn grey Brazilian font with confidence (docs/accuracy.md). The
training crops of br-plate-crops, openalpr-us and eu-plate-crops (models/plate_ocr_split.json, never
the held-out ones, never ua-plates) teach it those fonts.

How, and why so:
- The ONNX graph is converted to PyTorch (onnx2torch) with every float initializer made trainable;
  the convolutional stem stays frozen (low-level strokes are what 65 countries already taught it).
- Loss: cross-entropy of each of the 10 slots against the label (padded with the pad symbol), plus
  distillation towards the released network's own outputs (plate slots and region head, KL) on the
  same crops: learning without forgetting. The released network is the only record we have of the
  countries the training crops do not show, so the fine-tuned one is kept near it.
- The trained weights are written back into a copy of the released ONNX graph, initializer by
  initializer (mapped by converting a copy whose floats carry their own index), so OpenVINO runs the
  same graph; the script checks the written file against PyTorch's outputs.

Seeded; the result is scored with the readers of scripts/eval_ocr.py.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from eval_ocr import heldout_crops  # noqa: E402  (same folder)

MODEL = REPO / "models" / "cct_xs_v2_global.onnx"
CONFIG = REPO / "models" / "cct_xs_v2_global_plate_config.yaml"
SETS = ("br-plate-crops", "openalpr-us", "eu-plate-crops")
VALIDATION_PERCENT = 15


def convert(model: onnx.ModelProto) -> nn.Module:
    from onnx2torch import convert as onnx2torch_convert

    return onnx2torch_convert(model)


def initializer_map(model: onnx.ModelProto) -> dict[str, int]:
    """torch parameter/buffer name -> index of the ONNX float initializer it came from.

    onnx2torch copies initializers into buffers and conv modules; a copy of the graph whose every
    float initializer is filled with its own index tells which is which, unambiguously."""
    tagged = copy.deepcopy(model)
    for k, init in enumerate(tagged.graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(np.full(arr.shape, float(k), np.float32), init.name))
    module = convert(tagged)
    out: dict[str, int] = {}
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point() and t.numel():
            values = torch.unique(t.detach())
            if len(values) == 1 and float(values[0].detach()).is_integer():
                out[name] = int(values[0])
    return out


def trainable(module: nn.Module, freeze_prefix: str) -> list[nn.Parameter]:
    """Float buffers become parameters (onnx2torch keeps MatMul weights as buffers); the stem is frozen."""
    params: list[nn.Parameter] = []
    for mod in module.modules():
        for name, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_floating_point() and buf.numel() > 1:
                del mod._buffers[name]
                mod.register_parameter(name, nn.Parameter(buf.clone()))
    for name, p in module.named_parameters():
        p.requires_grad = not name.startswith(freeze_prefix)
        if p.requires_grad:
            params.append(p)
    return params


def crops_of(part: str) -> list[tuple[np.ndarray, str, str]]:
    """(BGR crop, label, set) of every set's `part`; openalpr-us cut with eval_ocr's label margins."""
    out = []
    for name in SETS:
        out += [(crop, label, name) for _, crop, label in heldout_crops(name, part=part)]
    return out


def jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A detector-box-like variation of a crop: shifted/scaled/rotated a little, light and contrast moved."""
    h, w = crop.shape[:2]
    angle = rng.uniform(-3, 3)
    scale = rng.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, 2] += rng.uniform(-0.04, 0.04) * w
    m[1, 2] += rng.uniform(-0.06, 0.06) * h
    out = cv2.warpAffine(crop, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    out = out.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.2))
    if rng.random() < 0.15:
        gray = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
        out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def synthetic(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, str, str]]:
    """`n` rendered plates of every anpr.synth style (one- and two-row, lane countries and others),
    some blurred, noisy, skewed: anchors where the released network's outputs are the target."""
    from anpr.synth import augment
    from anpr.synth.render import STYLES, random_plate_text, render_plate

    styles = list(STYLES)
    kinds = [augment.perspective, augment.motion_blur, augment.sensor_noise, augment.jpeg, augment.shadow]
    out = []
    for _ in range(n):
        style = styles[int(rng.integers(len(styles)))]
        plate = render_plate(
            random_plate_text(style, rng), style, rng, augmentations=[a for a in kinds if rng.random() < 0.4]
        )
        ys, xs = np.where(plate.alpha > 0)
        crop = plate.image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        out.append((crop if crop.ndim == 3 else cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), plate.label, style))
    return out


def to_input(crops: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """As CctReader.network feeds it: RGB, stretched to the input size, uint8 NHWC."""
    batch = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_LINEAR) for c in crops]
    return torch.from_numpy(np.stack(batch))


def encode(labels: list[str], alphabet: str, pad: str, slots: int) -> torch.Tensor:
    return torch.tensor([[alphabet.index(ch) for ch in label.ljust(slots, pad)] for label in labels])


def exact(
    module: nn.Module, data: list[tuple[np.ndarray, str, str]], alphabet: str, pad: str, size: tuple[int, int]
) -> dict[str, tuple[int, int]]:
    """Exact reads per set (argmax per slot, pad dropped), as eval_ocr's cct-alone scores them."""
    out: dict[str, list[int]] = {}
    module.eval()
    with torch.no_grad():
        for k in range(0, len(data), 64):
            part = data[k : k + 64]
            plate, _ = module(to_input([c for c, _, _ in part], size))
            for probs, (_, label, name) in zip(plate.argmax(-1).numpy(), part, strict=True):
                text = "".join(alphabet[i] for i in probs if alphabet[i] != pad)
                hit = out.setdefault(name, [0, 0])
                hit[0] += text == label
                hit[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def write_back(model: onnx.ModelProto, module: nn.Module, mapping: dict[str, int], path: Path) -> None:
    """The released graph with the trained values in its initializers."""
    out = copy.deepcopy(model)
    tensors = dict([*module.named_parameters(), *module.named_buffers()])
    for name, index in mapping.items():
        init = out.graph.initializer[index]
        value = tensors[name].detach().numpy().astype(np.float32)
        old = numpy_helper.to_array(init)
        out.graph.initializer[index].CopyFrom(numpy_helper.from_array(value.reshape(old.shape), init.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(path))


def check_openvino(path: Path, module: nn.Module, crops: list[np.ndarray], size: tuple[int, int]) -> float:
    """Largest difference between OpenVINO on the written file and PyTorch: the write-back is right."""
    import openvino as ov

    x = to_input(crops, size)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": ov.Type.f32})
    got = compiled({0: x.numpy()})
    module.eval()
    with torch.no_grad():
        want = module(x)
    return max(
        float(np.abs(got[compiled.output(n)] - w.numpy()).max()) for n, w in zip(("plate", "region"), want, strict=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the KL towards the released network")
    ap.add_argument("--freeze", default="CCT_OCR_1/conv_stem_1", help="parameter name prefix kept frozen")
    ap.add_argument("--anchors", type=int, default=16, help="synthetic plates per batch, distilled only")
    ap.add_argument("--pool", type=int, default=3000, help="synthetic plates rendered once, drawn from per batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    spec = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    alphabet, pad, slots = spec["alphabet"], spec["pad_char"], int(spec["max_plate_slots"])
    size = (int(spec["img_width"]), int(spec["img_height"]))

    released = onnx.load(str(MODEL))
    mapping = initializer_map(released)
    student = convert(released)
    teacher = convert(released).eval()
    params = trainable(student, args.freeze)
    print(f"{len(mapping)} initializers mapped; {sum(p.numel() for p in params)} trainable values", flush=True)

    usable = [(c, lab, s) for c, lab, s in crops_of("train") if len(lab) <= slots and set(lab) <= set(alphabet)]
    # Progress is watched on a validation part of the training crops (by plate, so no plate is on both
    # sides); the held-out crops are scored once, at the end, and choose nothing.
    val_plates = {lab for _, lab, _ in usable if zlib.crc32(lab.encode()) % 100 < VALIDATION_PERCENT}
    train = [x for x in usable if x[1] not in val_plates]
    val = [x for x in usable if x[1] in val_plates]
    print(f"train crops {len(train)}, validation crops {len(val)}", flush=True)
    probe = synthetic(40 * 10, np.random.default_rng(args.seed + 1))
    started = time.monotonic()
    pool = synthetic(args.pool, np.random.default_rng(args.seed + 2))
    print(f"{len(pool)} synthetic anchors rendered in {time.monotonic() - started:.0f} s", flush=True)
    print(f"released, validation exact: {exact(teacher, val, alphabet, pad, size)}", flush=True)
    print(f"released, synthetic exact: {exact(teacher, probe, alphabet, pad, size)}", flush=True)

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = args.epochs * ((len(train) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    eps = 1e-7
    for epoch in range(args.epochs):
        student.train()
        order = rng.permutation(len(train))
        started, total = time.monotonic(), 0.0
        for k in range(0, len(order), args.batch):
            part = [train[i] for i in order[k : k + args.batch]]
            anchors = [pool[i] for i in rng.integers(len(pool), size=args.anchors)] if args.anchors else []
            x = to_input([jitter(c, rng) for c, _, _ in part] + [c for c, _, _ in anchors], size)
            y = encode([lab for _, lab, _ in part], alphabet, pad, slots)
            with torch.no_grad():
                t_plate, t_region = teacher(x)
            plate, region = student(x)
            real = plate[: len(part)]
            ce = nn.functional.nll_loss(torch.log(real + eps).reshape(-1, real.shape[-1]), y.reshape(-1))
            kl_plate = (t_plate * (torch.log(t_plate + eps) - torch.log(plate + eps))).sum(-1).mean()
            kl_region = (t_region * (torch.log(t_region + eps) - torch.log(region + eps))).sum(-1).mean()
            loss = ce + args.distill * (kl_plate + kl_region)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(part)
        print(
            f"epoch {epoch + 1}: loss {total / len(train):.4f}, {time.monotonic() - started:.0f} s; "
            f"validation exact {exact(student, val, alphabet, pad, size)}, "
            f"synthetic {sum(v[0] for v in exact(student, probe, alphabet, pad, size).values())}",
            flush=True,
        )
    held = crops_of("heldout")
    print(
        f"held-out exact: released {exact(teacher, held, alphabet, pad, size)}, "
        f"fine-tuned {exact(student, held, alphabet, pad, size)}",
        flush=True,
    )
    write_back(released, student, mapping, args.out)
    diff = check_openvino(args.out, student, [c for c, _, _ in held[:64]], size)
    print(f"wrote {args.out}; OpenVINO vs PyTorch max |diff| {diff:.2e}", flush=True)
    if diff > 1e-3:
        raise SystemExit(f"write-back check failed: OpenVINO differs from PyTorch by {diff}")


if __name__ == "__main__":
    main()
