"""Training throughput: the seed network against the default model.

Each model as its experiment builds it (`seed_original.yaml`, `default.yaml`: the default
model reads its inputs at twice the size it predicts at). Side by side, at 64 / 96 / 192 px,
in fp32 and bf16 autocast (CPU) or AMP (GPU), with and without channels_last: training
samples/s (forward, BCE + SSIM losses, backward, AdamW step on random inputs: data loading is
measured by loader.py), peak memory, FLOPs per sample and the achieved FLOP/s against the
machine's measured matmul peak.

    python benchmarks/train_speed.py                 # writes the 'train_speed' section
    python benchmarks/train_speed.py --device cuda   # on a GPU machine: 'train_speed_gpu'
    python benchmarks/train_speed.py --smoke         # seconds; prints only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, publish, table  # noqa: E402
from fgdepth.config import load_config  # noqa: E402
from fgdepth.losses import bce_loss, ssim_loss  # noqa: E402
from fgdepth.models import build_model  # noqa: E402

EXPERIMENT = {"seed": "seed_original", "unet": "default"}  # where each model's options come from

BATCH = {"cpu": {64: 32, 96: 16, 192: 8}, "cuda": {64: 256, 96: 128, 192: 64}}


def matmul_peak(
    device: torch.device, dtype: torch.dtype, seconds: float, n: int | None = None
) -> float:
    """GFLOP/s of a large square matrix product (``n`` x ``n``; by default 8192 on a GPU,
    1024 on a CPU): what the hardware can do at best."""
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        torch.mm(a, b)
        done += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def experiment_model(name: str):
    """The model as its experiment builds it."""
    spec = load_config(EXPERIMENT[name]).model
    return build_model(spec.name, **spec.options)


def flops_per_sample(model, size: int, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    side = size * getattr(model, "input_scale", 1)
    x = torch.rand(2, 3, side, side, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        mask, depth = model(x, x)
        (mask.float().mean() + depth.float().mean()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def measure(
    name: str, size: int, precision: str, channels_last: bool, device_name: str, seconds: float
) -> dict:
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = experiment_model(name).to(device)
    flops = flops_per_sample(model, size, device)
    batch = BATCH[device.type][size]
    side = size * getattr(model, "input_scale", 1)  # inputs at the model's input scale
    fg_bg = torch.rand(batch, 3, side, side, device=device)
    bg = torch.rand(batch, 3, side, side, device=device)
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    depth = torch.rand(batch, 1, size, size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        fg_bg, bg = (t.contiguous(memory_format=torch.channels_last) for t in (fg_bg, bg))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            m, d = model(fg_bg, bg)
        loss = 2 * bce_loss(m, mask) + ssim_loss(d, depth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        step()
        steps += 1
        sync()
    rate = steps * batch / (time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # the whole process (this measurement runs in a process of its own)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name,
        "size": size,
        "precision": precision,
        "channels_last": channels_last,
        "batch": batch,
        "samples_per_s": rate,
        "peak_mb": peak_mb,
        "gflop_per_sample": flops / 1e9,
        "achieved_gflops": flops * rate / 1e9,
    }


def run_isolated(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--one", nargs=5, metavar=("MODEL", "SIZE", "PREC", "CL", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.one:
        name, size, prec, cl, secs = args.one
        print(json.dumps(measure(name, int(size), prec, cl == "1", args.device, float(secs))))
        return 0

    device = torch.device(args.device)
    if device.type == "cuda":  # cuDNN convolutions use TF32 by default: measure peak alike
        torch.backends.cuda.matmul.allow_tf32 = True
    seconds = 0.2 if args.smoke else args.seconds
    # smoke: the smallest input both models take, and a small matrix product (a CPU without
    # bf16 instructions emulates them: the full-size product takes seconds)
    sizes = [16] if args.smoke else [64, 96, 192]
    if args.smoke:
        BATCH[device.type][16] = 2
    low = "bf16"
    results = []
    for name in ("seed", "unet"):
        for size in sizes:
            for prec in ("fp32", low):
                for cl in (False, True):
                    one = [name, str(size), prec, "1" if cl else "0", str(seconds)]
                    if device.type == "cpu" and not args.smoke:
                        r = run_isolated(one)
                    else:
                        r = measure(name, size, prec, cl, args.device, seconds)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    peaks = {
        p: matmul_peak(
            device,
            torch.float32 if p == "fp32" else torch.bfloat16,
            0.1 if args.smoke else 1.0,
            128 if args.smoke else None,
        )
        for p in ("fp32", low)
    }
    rows = []
    for r in results:
        rows.append(
            [
                r["model"],
                r["size"],
                r["precision"],
                "yes" if r["channels_last"] else "no",
                r["batch"],
                f"{r['samples_per_s']:,.1f}",
                f"{r['peak_mb']:,.0f}",
                f"{r['gflop_per_sample']:.2f}",
                f"{r['achieved_gflops']:,.0f}",
                f"{100 * r['achieved_gflops'] / peaks[r['precision']]:.0f}%",
            ]
        )

    def best(name, size):
        return max(r["samples_per_s"] for r in results if r["model"] == name and r["size"] == size)

    speedups = ", ".join(f"{s} px {best('unet', s) / best('seed', s):.1f}x" for s in sizes)
    top = sizes[-1]
    epoch = ", ".join(
        f"{name} {280_000 / best(name, top) / 60:,.1f} min" for name in ("seed", "unet")
    )
    tf32 = " (TF32, as cuDNN convolutions use by default)" if device.type == "cuda" else ""
    section = "train_speed_gpu" if device.type == "cuda" else "train_speed"
    cmd = "python benchmarks/train_speed.py" + (" --device cuda" if device.type == "cuda" else "")
    body = "\n".join([
        f"## Training throughput ({'GPU' if device.type == 'cuda' else 'CPU'})",
        "",
        f"Machine: {machine('fp32 and bf16 autocast, each measured', torch.get_num_threads())}. "
        f"Command: `{cmd}`.",
        "",
        "Models as `seed_original.yaml` and `default.yaml` build them (px: the predicted size; "
        "the default model reads its inputs at twice that). One training step = forward, "
        "2 x BCE (mask) + SSIM (depth), backward, AdamW; random inputs (data loading is "
        "measured separately). Peak memory: "
        + ("`torch.cuda.max_memory_allocated`." if device.type == "cuda"
           else "the measuring process's maximum resident set size (each row a process)."),
        f"Matmul peak measured here: fp32{tf32} {peaks['fp32']:,.0f} GFLOP/s, "
        f"{low} {peaks[low]:,.0f} GFLOP/s.",
        "",
        table(["model", "px", "precision", "channels_last", "batch", "samples/s", "peak MB",
               "GFLOP/sample", "GFLOP/s", "of peak"], rows),
        "",
        f"Default model (`unet`) against the seed network, best setting of each: {speedups}.",
        f"Projected time of one epoch of the original 280K training samples at {top} px "
        f"(compute only, best setting): {epoch}.",
    ])  # fmt: skip
    publish(section, body, write=not args.smoke)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
