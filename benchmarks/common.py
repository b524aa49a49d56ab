"""Shared helpers for benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine(precision: str | None = None, threads: int | None = None) -> str:
    """CPU model, its AVX-512 and native-bf16 flags, cores, GPU, versions; with ``precision``
    and ``threads``, what the figures were measured in."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    avx512 = "yes" if "avx512f" in flags else "no"
    bf16 = "yes" if "avx512_bf16" in flags else "no"
    amx = "yes" if "amx_bf16" in flags else "no"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    line = f"{cpu} (AVX-512: {avx512}, AVX512_BF16: {bf16}, AMX: {amx}), {cores} cores, {gpu}"
    line += f"; {versions}"
    if precision:
        line += f"; {precision}"
    if threads:
        line += f", {threads} threads"
    return line


def commit() -> str:
    """The checked-out commit, marked ``+changes`` when the tree differs from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = git("status", "--porcelain", "--", "fgdepth", "experiments").strip()
    return git("rev-parse", "--short", "HEAD").strip() + ("+changes" if dirty else "")


def auto_precision() -> str:
    """What ``precision: auto`` trains in on this machine's CPU."""
    from fgdepth.engine.precision import choose_precision

    return choose_precision("auto", torch.device("cpu"))[0]


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD, after: str | None = None):
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->``; a new one
    goes just after section ``after`` where that one is there, else at the end."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    anchor = f"<!-- {after}:end -->" if after else None
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif anchor and anchor in text:
        text = text.replace(anchor, f"{anchor}\n\n{block}", 1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, body: str, write: bool = True, after: str | None = None) -> None:
    """Print a section and, unless ``write`` is false (smoke runs), write it to BENCHMARKS.md
    (a new section just after section ``after``)."""
    print(body)
    if write:
        write_section(name, body, after=after)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
