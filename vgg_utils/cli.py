"""The course's command line: ``vgg-course doctor | fetch | run`` (also ``python -m vgg_utils``).

* ``doctor``: can the course run here, on what, and what to do (:mod:`vgg_utils.doctor`);
* ``fetch [--all | NAME ...]``: pre-download CIFAR-10, ImageNet weights, Oxford Flowers for
  offline use (:mod:`vgg_utils.fetch`); alone, it lists what exists and what is here;
* ``run [NOTEBOOK ...]``: execute notebooks headless, with times, peak memory, HTML
  (:mod:`vgg_utils.notebook_runner`).

Exit codes: 0 fine (``doctor``: the course runs, maybe on fallbacks), 1 failed (``doctor``: the
course cannot run as it is), 2 wrong usage. Used in the README's command-line section.
"""

from __future__ import annotations

import argparse
import shlex
import sys

EPILOG = """examples:
  vgg-course doctor
  vgg-course fetch                      # what can be fetched, its size, whether it is here
  vgg-course fetch cifar10 vgg16        # or: --all
  vgg-course run 01 04 --fast --html build/html
  vgg-course run --record data/results/notebook_runs.csv   # default size, all seven"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgg-course", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="{doctor,fetch,run}")
    doctor = sub.add_parser("doctor", help="check versions, device, data, models, network, disk")
    doctor.add_argument("--timeout", type=float, default=3.0, help="network probe timeout, seconds (default 3)")

    fetch = sub.add_parser("fetch", help="pre-download data and weights for offline use (alone: list them)")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="cifar10, vgg16, flowers102 (also vgg11..vgg19[_bn])")
    fetch.add_argument("--all", action="store_true", help="everything the notebooks use: cifar10 vgg16 flowers102")
    fetch.add_argument("--mirror", metavar="URL", help="download the original files from URL/<file name> "
                       "(a workshop server, e.g. python -m http.server); checksums still verified")
    fetch.add_argument("--timeout", type=float, default=5.0, help="reachability probe, seconds (default 5)")
    fetch.add_argument("--stall", type=float, default=30.0, help="give up on a server silent this long (default 30)")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives (to serve as a mirror)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")

    run = sub.add_parser("run", help="execute notebooks headless, in order, each in a fresh kernel")
    run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="01, 01_architecture or a path (default: all)")
    run.add_argument("--fast", action="store_true", help="the CI size (VGG_FAST=1 in the kernels)")
    run.add_argument("--html", metavar="DIR", help="write each notebook as HTML and an index.html into DIR")
    run.add_argument("--inplace", action="store_true", help="save executed notebooks back (those that ran to the end)")
    run.add_argument("--record", metavar="CSV", help="append one row per notebook (time, peak memory, provenance)")
    run.add_argument("--timeout", type=float, default=1800, help="seconds per cell (default 1800)")
    run.add_argument("--kernel", default=None, help="a Jupyter kernel name (default: this Python)")
    run.add_argument("--offline", action="store_true", help="rehearse without network: kernels resolve no host but this one")
    return parser


def _doctor(args) -> int:
    from .doctor import report, run_checks

    text, code = report(run_checks(network_timeout=args.timeout))
    print(text)
    return code


def _fetch(args) -> int:
    from . import fetch

    if args.all and args.names:
        print("give NAMEs or --all, not both", file=sys.stderr)
        return 2
    try:
        items = fetch.catalog(None if args.all else args.names, mirror=args.mirror)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if not args.all and not args.names:
        print(fetch.listing(items))
        print("\nfetch NAME ... or fetch --all downloads them (resumable, checksum-verified)")
        return 0
    try:
        fetch.fetch(items, probe_timeout=args.timeout, stall=args.stall, progress=not args.quiet,
                    keep_archives=args.keep_archives)  # fmt: skip
    except fetch.FetchError as err:
        print(f"fetch failed: {err}", file=sys.stderr)
        return 1
    return 0


def _run(args, argv: list[str]) -> int:
    from .notebook_runner import CURRENT_PYTHON, NotebookRunError, resolve, run_notebooks

    try:
        paths = resolve(args.notebooks)
    except NotebookRunError as err:
        print(err, file=sys.stderr)
        return 2
    runs = run_notebooks(paths, fast=args.fast, html_dir=args.html, inplace=args.inplace, record=args.record,
                         timeout=args.timeout, kernel=args.kernel or CURRENT_PYTHON, offline=args.offline,
                         command="vgg-course " + shlex.join(argv))  # fmt: skip
    return 0 if runs and runs[-1].status == "ok" and len(runs) == len(paths) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vgg-course`` and ``python -m vgg_utils``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "fetch":
        return _fetch(args)
    return _run(args, argv)
