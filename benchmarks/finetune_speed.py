"""How much of a fine-tuning step is data work? Three pipelines, same model, same data, same steps.

1. ``dataloader``: the usual per-image pipeline, as torchvision's ``FashionMNIST`` dataset
   does it: a PIL image per item from the stored 28x28 bytes, then per-image transforms
   (pad to 32, three channels, negative, ``ToTensor``, ``Normalize``), batched by a
   ``DataLoader`` with worker processes (2, as on a laptop).
2. ``course``: the course loop: the same images prepared once as a uint8 tensor on the
   device (what ``load_domain("target")`` holds), one fused normalize per batch
   (``TensorLoader``), trained by ``cu.fit``.
3. ``model``: the model step alone (``cu.train_step``) on the same batches, already
   normalized, in memory.

Both pipelines are checked to produce the same tensors. Each pipeline gets a fresh copy
of the same ResNet-18, the same batch size and the same number of timed steps after
warm-up steps; each is timed ``--rounds`` times in alternating order and the best kept.
The DataLoader's figure with its worker start-up (every epoch of a non-persistent
DataLoader pays it) is printed as well.

Run: ``python benchmarks/finetune_speed.py [--steps N] [--batch-size 128] [--workers 2] [--amp auto|on|off]``.
The last line of output is JSON with images per second for each pipeline,
``ratio_vs_dataloader`` (course / dataloader) and ``data_overhead`` (the fraction of a
course-loop step not spent in the model step).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import course_utils as cu


class PerImageFashion(Dataset):
    """What torchvision's FashionMNIST does per item: a PIL image from the uint8 array, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i].numpy(), mode="L")  # as torchvision.datasets.FashionMNIST
        return self.transform(img), int(self.labels[i])


def per_image_transform(mean, std):
    """The per-image version of the course's target domain: pad to 32, 3 channels, negative, normalize."""
    return transforms.Compose([
        transforms.Pad(2), transforms.Grayscale(num_output_channels=3), transforms.RandomInvert(p=1.0),
        transforms.ToTensor(), transforms.Normalize(mean, std)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(model, batches, opt, device, n: int, amp: bool) -> None:
    it = iter(batches)
    for _ in range(n):
        x, y = next(it)
        cu.train_step(model, x.to(device, non_blocking=True), y.to(device, non_blocking=True), opt, amp=amp)
    sync(device)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps; default 30 on the CPU, 200 on a GPU (30 GPU steps last under 0.5 s: too noisy)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first; default 3 on the CPU, 10 on a GPU")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="each pipeline is timed this many times; best kept")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                        help="bfloat16 autocast for all three pipelines; auto: as cu.fit decides (on for CUDA)")
    args = parser.parse_args()

    device = cu.get_device(args.device)
    on_cpu = device.type == "cpu"
    args.steps = (30 if on_cpu else 200) if args.steps is None else args.steps
    args.warmup = (3 if on_cpu else 10) if args.warmup is None else args.warmup
    cu.seed_everything(0)
    n = (args.steps + args.warmup) * args.batch_size
    fm = cu.load_dataset("fashion-mnist", train=True)
    mask = torch.isin(fm.labels, torch.tensor(cu.data.TARGET_CLASSES))
    raw = fm.images[mask][:n, 0]  # (n, 28, 28) uint8, as stored
    labels = fm.labels[mask][:n] - cu.data.TARGET_CLASSES[0]
    if len(labels) < n:
        raise SystemExit(f"need {n} images, the target domain has {len(labels)}; use fewer steps")
    course_images = 255 - cu.to_rgb32(raw.unsqueeze(1))  # what load_domain("target") holds: (n, 3, 32, 32)
    mean, std = (0.8, 0.8, 0.8), (0.3, 0.3, 0.3)
    base = cu.resnet18_for(5).to(device).train()
    # all three pipelines use the same precision
    amp = device.type == "cuda" if args.amp == "auto" else args.amp == "on"

    def per_image_loader():
        return DataLoader(PerImageFashion(raw, labels, per_image_transform(mean, std)), batch_size=args.batch_size,
                          shuffle=True, num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=True,
                          generator=torch.Generator().manual_seed(0))

    def course_loader(count):
        return cu.TensorLoader(course_images[:count * args.batch_size], labels[:count * args.batch_size],
                               args.batch_size, normalize=(mean, std), device=device, shuffle=True, seed=0,
                               drop_last=True)

    # the two pipelines give the same tensors: the comparison is of speed only
    check = DataLoader(PerImageFashion(raw[:8], labels[:8], per_image_transform(mean, std)), batch_size=8)
    x_per_image = next(iter(check))[0]
    x_course = course_loader(1).batch(torch.arange(8, device=device))[0].cpu()
    torch.testing.assert_close(x_per_image, x_course, rtol=1e-5, atol=1e-5)

    # the model step alone: the same batches, already normalized, in memory on the device
    tl = course_loader(args.steps + args.warmup)
    in_memory = [tl.batch(torch.arange(i * args.batch_size, (i + 1) * args.batch_size, device=device))
                 for i in range(args.steps)]

    def time_dataloader():
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        it = iter(per_image_loader())  # a new epoch: workers start here, as in every epoch
        run_steps(model, it, opt, device, args.warmup, amp)
        warm = time.perf_counter()
        run_steps(model, it, opt, device, args.steps, amp)
        end = time.perf_counter()
        del it
        return end - warm, end - start

    def time_course():
        model = copy.deepcopy(base)
        cu.fit(model, course_loader(args.warmup), epochs=1, lr=1e-3, device=device, progress=False, amp=amp,
               channels_last=False, schedule="constant")  # warm-up
        loader = course_loader(args.steps)  # the upload of the images to the device is not a per-step cost
        sync(device)
        start = time.perf_counter()
        cu.fit(model, loader, epochs=1, lr=1e-3, device=device, progress=False, amp=amp,
               channels_last=False, schedule="constant")
        sync(device)
        return time.perf_counter() - start, None

    def time_model():
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run_steps(model, in_memory, opt, device, args.warmup, amp)
        start = time.perf_counter()
        run_steps(model, in_memory, opt, device, args.steps, amp)
        return time.perf_counter() - start, None

    pipelines = {"dataloader": time_dataloader, "course": time_course, "model": time_model}
    best: dict[str, float] = {}
    epoch_best = float("inf")
    for r in range(args.rounds):  # alternate the order so drift in machine speed hits all alike
        for name in (list(pipelines) if r % 2 == 0 else list(pipelines)[::-1]):
            seconds, with_start = pipelines[name]()
            best[name] = min(best.get(name, float("inf")), seconds)
            if with_start is not None:
                epoch_best = min(epoch_best, with_start)

    images = args.steps * args.batch_size
    result = {
        "device": str(device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.machine(), "torch": torch.__version__, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "workers": args.workers,
        "image": "Fashion-MNIST 28x28 uint8 -> 3x32x32", "amp": amp,
        "dataloader_img_per_s": images / best["dataloader"],
        "course_img_per_s": images / best["course"],
        "model_only_img_per_s": images / best["model"],
        "dataloader_with_worker_start_img_per_s": (args.steps + args.warmup) * args.batch_size / epoch_best,
    }
    result["ratio_vs_dataloader"] = best["dataloader"] / best["course"]
    result["data_overhead"] = max(0.0, 1.0 - best["model"] / best["course"])
    result["dataloader_data_overhead"] = max(0.0, 1.0 - best["model"] / best["dataloader"])
    for k, v in result.items():
        if isinstance(v, float):
            result[k] = round(v, 4)
    print(f"device {device}, {result['affinity']} cores usable, {torch.get_num_threads()} torch threads, "
          f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, best of {args.rounds}")
    print(f"per-image DataLoader ({args.workers} workers): {result['dataloader_img_per_s']:.0f} img/s "
          f"({result['dataloader_with_worker_start_img_per_s']:.0f} counting warm-up and worker start-up)")
    print(f"course loop (TensorLoader + cu.fit):      {result['course_img_per_s']:.0f} img/s")
    print(f"model step alone (batches in memory):     {result['model_only_img_per_s']:.0f} img/s")
    print(f"course / DataLoader: {result['ratio_vs_dataloader']:.2f}x; not model work in a course step: "
          f"{result['data_overhead']:.1%} (in a DataLoader step: {result['dataloader_data_overhead']:.1%})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
