"""Issue 3's throughput check: nasrl's trainer against two hand-written baselines.

    python benchmarks/trainer_throughput.py [--data-dir DIR] [--images 8192] [--rounds 3] [--device cpu]

For three fixed ``conv`` architectures on Fashion-MNIST, measures training images/s of
(1) ``nasrl.training.train_model``, (a) a tight hand-written loop over the same in-memory
tensors (same model, batch size, augmentation and optimizer), and (b) a conventional
per-sample ``Dataset`` + ``DataLoader`` loop with per-sample augmentation. Runs are
interleaved round by round (so drift in the machine's speed hits all three alike), each
after a warm-up, and the best round of each is kept. Targets on CPU: nasrl >= 0.95x (a)
and >= 1.5x (b).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from nasrl.data import ImageData, load_images, random_crop, random_flip
from nasrl.models import build_model
from nasrl.spaces import ConvSpace
from nasrl.training import TrainConfig, seeded, train_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/fashion-mnist"
# (filter h, filter w, filters, stride, pool, inputs) per layer, from the predicted-stride
# space: a paper-like chain at full resolution first, a strided net with skips, and a cheap
# child of the kind a search meets often (stride 2 from the first layer).
ARCHS: dict[str, tuple[dict[str, object], list[tuple[int, int, int, int, str, tuple[int, ...]]]]] = {
    "chain-6": ({"predict_strides": True}, [
        (3, 3, 36, 1, "none", ()), (3, 3, 48, 2, "none", (0,)), (3, 3, 48, 1, "none", (1,)),
        (3, 3, 64, 2, "none", (2,)), (3, 3, 64, 1, "none", (3,)), (3, 3, 64, 1, "none", (4,))]),
    "skips-6": ({"predict_strides": True}, [
        (5, 5, 24, 2, "none", ()), (3, 3, 36, 1, "none", (0,)), (3, 5, 36, 2, "none", (0, 1)),
        (5, 3, 48, 1, "none", (2,)), (3, 3, 48, 1, "none", (2, 3)), (1, 1, 64, 1, "none", (1, 4))]),
    "small-6": ({"predict_strides": True}, [
        (3, 3, 24, 2, "none", ()), (3, 3, 24, 2, "none", (0,)), (3, 3, 36, 1, "none", (1,)),
        (1, 3, 36, 1, "none", (2,)), (3, 1, 36, 1, "none", (3,)), (3, 3, 48, 2, "none", (1, 4))]),
}


def make(name: str) -> tuple[ConvSpace, object]:
    params, layers = ARCHS[name]
    space = ConvSpace(num_layers=len(layers), **params)  # type: ignore[arg-type]
    choices: dict[str, object] = {}
    for i, (fh, fw, f, s, pool, inputs) in enumerate(layers):
        choices.update({f"L{i}.filter_height": fh, f"L{i}.filter_width": fw, f"L{i}.filters": f,
                        f"L{i}.stride_h": s, f"L{i}.stride_w": s, f"L{i}.inputs": list(inputs)})
        if space.pooling:
            choices[f"L{i}.pool"] = pool
    return space, space.make(choices)


def fresh_model(name: str, data: ImageData, device: torch.device) -> nn.Module:
    space, arch = make(name)
    with seeded(0):
        return build_model(space, arch, input_shape=data.input_shape,  # type: ignore[arg-type]
                           num_classes=data.num_classes).to(device)


def sgd(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           nesterov=True, weight_decay=config.weight_decay)


def run_nasrl(model: nn.Module, data: ImageData, config: TrainConfig, device: torch.device) -> float:
    start = time.perf_counter()
    result = train_model(model, data, config, seed=0, device=device, validate=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert result.ok, result.error
    return time.perf_counter() - start


def run_tight(model: nn.Module, data: ImageData, config: TrainConfig, device: torch.device) -> float:
    """What a careful user writes by hand: tensors in memory, slices of a permutation."""
    start = time.perf_counter()
    x, y = data.train_x.to(device), data.train_y.to(device)
    opt = sgd(model, config)
    gen = torch.Generator(device=device).manual_seed(0)
    n, bs = len(x), config.batch_size
    perm = torch.randperm(n, generator=gen, device=device)
    model.train()
    for b in range(n // bs):
        idx = perm[b * bs:(b + 1) * bs]
        xb = random_flip(random_crop(x[idx], data.augment.crop_padding, gen), gen)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    float(loss.detach())  # wait for the device
    return time.perf_counter() - start


class PerSample(Dataset[tuple[Tensor, int]]):
    """The conventional pipeline (torchvision style): uint8 images, and per image in
    __getitem__ a random crop with padding, a flip, conversion to float and normalization."""

    def __init__(self, x: Tensor, y: Tensor, padding: int) -> None:
        # back to the uint8 images a Dataset would hold
        lo, hi = x.amin(), x.amax()
        self.x = ((x - lo) / (hi - lo) * 255).round().to(torch.uint8)
        self.y, self.padding = y.tolist(), padding
        flat = self.x.float().div(255)
        self.mean, self.std = float(flat.mean()), float(flat.std())

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = F.pad(self.x[i], (self.padding,) * 4)
        dy, dx = torch.randint(2 * self.padding + 1, (2,)).tolist()
        img = img[:, dy:dy + self.x.shape[2], dx:dx + self.x.shape[3]]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img.float().div(255) - self.mean) / self.std, self.y[i]


def run_dataloader(model: nn.Module, data: ImageData, config: TrainConfig, device: torch.device) -> float:
    start = time.perf_counter()
    torch.manual_seed(0)
    loader = DataLoader(PerSample(data.train_x, data.train_y, data.augment.crop_padding),
                        batch_size=config.batch_size, shuffle=True, drop_last=True)
    opt = sgd(model, config)
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    float(loss.detach())
    return time.perf_counter() - start


RUNNERS = {"nasrl": run_nasrl, "tight loop (a)": run_tight, "DataLoader (b)": run_dataloader}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=6144, help="training images per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    full = load_images("fashion-mnist", data_dir=args.data_dir, seed=0)
    data = ImageData(full.name, full.train_x[:args.images], full.train_y[:args.images], full.val_x[:256],
                     full.val_y[:256], full.test_x[:256], full.test_y[:256], full.num_classes, full.augment)
    warm = ImageData(data.name, data.train_x[:512], data.train_y[:512], data.val_x, data.val_y,
                     data.test_x, data.test_y, data.num_classes, data.augment)
    config = TrainConfig(epochs=1, batch_size=128)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.images} images per run, "
          f"batch {config.batch_size}, best of {args.rounds} rounds; images/s")
    header = f"{'architecture':10s} {'MACs':>7s} " + " ".join(f"{k:>15s}" for k in RUNNERS)
    print(header + f" {'vs (a)':>7s} {'vs (b)':>7s}")
    ratios_a, ratios_b = [], []
    for name in ARCHS:
        best = dict.fromkeys(RUNNERS, float("inf"))
        for runner in RUNNERS.values():  # warm-up: allocator, kernels, thread pools
            runner(fresh_model(name, data, device), warm, config, device)
        for _ in range(args.rounds):
            for key, runner in RUNNERS.items():
                best[key] = min(best[key], runner(fresh_model(name, data, device), data, config, device))
        steps = (args.images // config.batch_size) * config.batch_size
        speed = {k: steps / v for k, v in best.items()}
        macs = _macs(name, data)
        ra, rb = speed["nasrl"] / speed["tight loop (a)"], speed["nasrl"] / speed["DataLoader (b)"]
        ratios_a.append(ra)
        ratios_b.append(rb)
        print(f"{name:10s} {macs / 1e6:6.1f}M " + " ".join(f"{v:15.0f}" for v in speed.values())
              + f" {ra:6.2f}x {rb:6.2f}x", flush=True)
    ok_a, ok_b = min(ratios_a) >= 0.95, min(ratios_b) >= 1.5
    print(f"nasrl vs tight loop: min {min(ratios_a):.2f}x (target >= 0.95x) {'PASS' if ok_a else 'MISS'}")
    print(f"nasrl vs DataLoader: min {min(ratios_b):.2f}x (target >= 1.5x) {'PASS' if ok_b else 'MISS'}")


def _macs(name: str, data: ImageData) -> int:
    from nasrl.training import count_macs

    return count_macs(fresh_model(name, data, torch.device("cpu")), data.val_x[:1])


if __name__ == "__main__":
    main()
