"""python -m midalign.data list | fetch NAME… [--langs …] [--data-dir DIR] (see midalign/data/sources.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from midalign.cli import run
from midalign.data import sources


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m midalign.data", description=sources.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the datasets, their licences and where they come from")
    f = sub.add_parser("fetch", help="download and prepare datasets")
    f.add_argument("names", nargs="+", choices=sorted(sources.SOURCES))
    f.add_argument("--langs", nargs="+", help="tatoeba/alma: languages paired with English (default: the paper's)")
    f.add_argument("--data-dir", type=Path, help="root folder (default: $MIDALIGN_CACHE/datasets)")
    f.add_argument("--from", dest="local", type=Path, metavar="PATH",
                   help="read the publisher's files from PATH (a folder laid out as the publisher's repository) "
                        "instead of downloading: ALMA's human_written_data/, a copy of wmt23-news-systems, MASSIVE's "
                        "tarball or its unpacked folder, LASER's Tatoeba test set folder (data/tatoeba/v1)")
    args = p.parse_args(argv)
    if args.command == "list":
        for s in sources.SOURCES.values():
            print(f"{s.name:8s} {s.licence}\n         {s.citation}")
        return
    for name in args.names:
        for folder in sources.ensure(name, args.data_dir, args.langs, local=args.local):
            print(f"{name}: {folder}")


if __name__ == "__main__":
    run(main)
