"""The ``fgdepth`` command: argument parsing only; the work happens in the package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fgdepth.data.format import DataError
from fgdepth.parallel import default_workers


def _synth(args) -> int:
    from fgdepth.data.synth import SynthSpec, generate

    out = Path(args.out)
    if args.zip and out.suffix != ".zip":
        out = out.with_suffix(".zip")
    spec = SynthSpec(n=args.n, size=args.size, seed=args.seed, backgrounds=args.backgrounds)
    generate(spec, out, as_zip=args.zip, workers=args.workers)
    print(f"wrote {spec.n} samples on {spec.n_backgrounds} backgrounds to {out}")
    if args.preview:
        from fgdepth.data import open_dataset
        from fgdepth.data.preview import preview

        dataset = open_dataset(out)
        step = max(1, len(dataset) // 6)
        preview(dataset, range(0, min(len(dataset), 6 * step), step)).save(args.preview)
        print(f"preview: {args.preview}")
    return 0


def _inspect(args) -> int:
    from fgdepth.data.inspect import inspect_dataset

    summary, problems = inspect_dataset(args.path, workers=args.workers, quiet=False)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgdepth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the built-in procedural dataset")
    synth.add_argument("--out", required=True, help="output folder (or .zip with --zip)")
    synth.add_argument("--n", type=int, default=2000, help="number of samples")
    synth.add_argument("--size", type=int, default=192, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--backgrounds",
        type=int,
        default=None,
        help="number of backgrounds (default: one per 50 samples, at least 10)",
    )
    synth.add_argument("--zip", action="store_true", help="write one .zip instead of a folder")
    synth.add_argument("--workers", type=int, default=default_workers())
    synth.add_argument("--preview", metavar="PNG", help="also save a preview grid")
    synth.set_defaults(run=_synth)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="check a dataset and print a JSON summary")
    inspect.add_argument("path")
    inspect.add_argument("--workers", type=int, default=default_workers())
    inspect.set_defaults(run=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DataError as exc:
        print(f"fgdepth: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
