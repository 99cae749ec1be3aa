"""``medianode``: argument parsing, exit codes and presentation only.

Every :class:`~node.errors.NodeError` becomes one line on stderr and its exit
status (0 success, 1 data error, 2 usage or configuration error); no command
prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from node import __version__
from node.errors import EXIT_DATA, EXIT_OK, EXIT_USAGE, NodeError

logger = logging.getLogger("node")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{self.prog}: {message}")


class _Usage(Exception):
    pass


def _add_burn(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from node.profiles import DEFAULT_PROFILE, PROFILES

    p = sub.add_parser("burn", help="make a DICOM medium (ISO image or folder) from DICOM files")
    p.add_argument("sources", nargs="+", metavar="SRC", help="DICOM files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="PATH", help="the .iso image or folder to create")
    p.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME",
                   help=f"application profile (default {DEFAULT_PROFILE}): {', '.join(PROFILES)}")
    p.add_argument("--compress", default="none", metavar="SYNTAX",
                   help="none (default); encoders come with the compression issue")
    p.add_argument("--format", choices=("iso", "folder"), help="iso (default for PATH ending in .iso) or folder")
    p.add_argument("--label", metavar="TEXT", help="volume label (adjusted to ISO 9660 d-characters, reported)")
    p.add_argument("--invent-patient-id", action="store_true",
                   help="give a patient whose Patient ID another patient already has an invented ID")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=_burn)


def _burn(args: argparse.Namespace, out: TextIO) -> int:
    from node.errors import UsageError
    from node.media.build import burn
    from node.profiles import get_profile

    profile = get_profile(args.profile)
    if args.compress != "none":
        raise UsageError(f"--compress {args.compress}: only 'none' is available in this version")
    with _ProgressBar(sys.stderr, enabled=not args.json) as bar:
        report = burn(args.sources, out=args.out, profile=profile, fmt=args.format, label=args.label,
                      invent_patient_id=args.invent_patient_id, progress=bar.advance)
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(
            f"{report.out}: {report.instances} instance(s), {report.studies} study(ies), "
            f"{report.patients} patient(s), {report.bytes / 1e6:,.1f} MB, {report.sectors:,} sectors, {report.profile}\n"
        )
        for title, rows, key in (
            ("converted", report.converted, "conversion"),
            ("refused", report.refused, "reason"),
            ("skipped", report.skipped, "reason"),
            ("duplicate (copy kept: ...)", report.duplicates, "kept"),
        ):
            for row in rows:
                out.write(f"  {title}: {row['path']}: {row[key]}\n")
        for line in report.invented:
            out.write(f"  invented: {line}\n")
        for line in report.adjusted:
            out.write(f"  adjusted: {line}\n")
    return EXIT_DATA if report.refused else EXIT_OK


def _add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="check a medium (folder or .iso): DICOMDIR against the files")
    p.add_argument("path", metavar="PATH", help="media root folder or .iso image")
    p.add_argument("--profile", metavar="NAME", help="also check File IDs and syntaxes against this profile")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=_check)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from node.profiles import get_profile
    from node.read.check import check_medium

    profile = get_profile(args.profile) if args.profile else None
    report = check_medium(args.path, profile=profile)
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        out.write(f"{args.path}: {verdict}, {report.instances} instance(s)\n")
        for f in report.problems:
            out.write(f"  problem: {f.path}: {f.problem}\n")
        for f in report.notes:
            out.write(f"  note: {f.path}: {f.problem}\n")
        if report.profiles:
            out.write(f"  satisfies: {', '.join(report.profiles)}\n")
    return EXIT_OK if report.ok else EXIT_DATA


def _parser() -> _Parser:
    parser = _Parser(prog="medianode", description="A DICOM node that bridges the network and removable media.")
    parser.add_argument("--version", action="version", version=f"medianode {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_burn, _add_check]  # type: ignore[type-arg]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``medianode`` with ``argv``; return the exit status."""
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except _Usage as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(verbose=args.verbose)
    try:
        return int(args.run(args, out))
    except NodeError as exc:
        print(f"medianode {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"medianode {args.command}: interrupted; nothing was published", file=sys.stderr)
        return 130


def _configure_logging(*, verbose: bool) -> None:
    """Our messages on stderr; libraries' only with ``--verbose`` (their failures are reported as rows)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(logging.Filter("node"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


class _ProgressBar:
    """A one-line progress bar on a terminal; silent when stderr is not a tty."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.done = 0
        self.shown = -1

    def advance(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        mb = self.done >> 20
        if mb != self.shown:
            self.shown = mb
            self.stream.write(f"\rwriting {mb:,} MB")
            self.stream.flush()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.shown >= 0:
            self.stream.write("\n")
