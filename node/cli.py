"""``medianode``: argument parsing, exit codes and presentation only.

Every :class:`~node.errors.NodeError` becomes one line on stderr and its exit
status (0 success, 1 data error, 2 usage or configuration error); no command
prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from node import __version__, filemodes
from node.errors import EXIT_DATA, EXIT_HELD, EXIT_OK, EXIT_USAGE, ConfigError, NodeError
from node.words import counted

if TYPE_CHECKING:
    from node import routing
    from node.config import ClientTLS, Config, NodeConfig
    from node.media.capture import Equipment
    from node.index import Index
    from node.read.importer import ImportReport

logger = logging.getLogger("node")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one path."""

    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{self.prog}: {message}")


if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[_Parser]


class _Usage(Exception):
    pass


def _add_burn(sub: _Subparsers) -> None:
    from node.profiles import DEFAULT_PROFILE, PROFILES
    from node.syntaxes import COMPRESS, J2K_RATIO, JPEG_QUALITY

    p = sub.add_parser("burn", help="make a DICOM medium (ISO image or folder) from DICOM files")
    p.add_argument("sources", nargs="+", metavar="SRC", help="DICOM files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="PATH", help="the .iso image or folder to create")
    p.add_argument("--profile", default=DEFAULT_PROFILE, metavar="NAME",
                   help=f"application profile (default {DEFAULT_PROFILE}): {', '.join(PROFILES)}")
    p.add_argument("--compress", default="none", metavar="SYNTAX",
                   help=f"compress images: {', '.join(COMPRESS)} (default none; the profile decides which)")
    p.add_argument("--quality", type=int, metavar="1-100",
                   help=f"with --compress jpeg-baseline or jpeg-extended: the libjpeg quality (default {JPEG_QUALITY})")
    p.add_argument("--ratio", type=float, metavar="2-200",
                   help=f"with --compress j2k-lossy: the compression ratio to reach (default {J2K_RATIO:g})")
    p.add_argument("--psnr", type=float, metavar="DB",
                   help="with --compress j2k-lossy, instead of --ratio: the least PSNR in dB (30-100), over the image's range of values")
    p.add_argument("--allow-lossy-mammography", action="store_true",
                   help="let lossy compression apply to mammograms (not for primary diagnosis)")
    p.add_argument("--allow-bit-reduction", action="store_true",
                   help="squeeze images of more bits than a lossy JPEG process takes into it (else: lossless)")
    p.add_argument("--new-uids", action="store_true",
                   help="new Study, Series and SOP Instance UIDs (the originals kept in a private block)")
    p.add_argument("--deidentify", action="store_true",
                   help="PS3.15 Annex E Basic Profile de-identification, with new UIDs (teaching discs)")
    p.add_argument("--allow-burned-in", action="store_true",
                   help="with --deidentify: keep images flagged with burned-in annotation")
    p.add_argument("--repair", action="store_true",
                   help="correct values PS3.5 forbids (CS characters, ACR-NEMA dates and times, UID padding, "
                        "missing Type 2), each kept in the Original Attributes Sequence and reported")
    p.add_argument("--format", choices=("iso", "folder"), help="iso (default for PATH ending in .iso) or folder")
    p.add_argument("--label", metavar="TEXT", help="volume label (adjusted to ISO 9660 d-characters, reported)")
    p.add_argument("--invent-patient-id", action="store_true",
                   help="give a patient whose Patient ID another patient already has an invented ID")
    pdi = p.add_argument_group("IHE PDI media (STD-GEN-CD, -DVD-JPEG/-J2K, -USB-JPEG/-J2K)")
    pdi.add_argument("--pdi", action=argparse.BooleanOptionalAction, default=None,
                     help="an IHE PDI medium with README.TXT (default: when the profile allows it)")
    pdi.add_argument("--web", action="store_true", help="PDI web content: INDEX.HTM and IHE_PDI/ pages with JPEGs")
    pdi.add_argument("--viewer", metavar="DIR", type=Path, help="a viewer folder copied as-is (8.3 names, no autorun)")
    pdi.add_argument("--institution", default="", metavar="TEXT", help="who makes the medium (README.TXT, label)")
    pdi.add_argument("--contact", default="", metavar="TEXT", help="how to reach them (README.TXT)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    who = p.add_argument_group("identity of JPEG, PNG, TIFF and PDF sources (a sidecar NAME.yaml or capture.yaml wins)")
    for key, what in _CAPTURE_FLAGS.items():
        who.add_argument("--" + key.replace("_", "-"), dest=key, metavar="VALUE", help=what)
    who.add_argument("--config", metavar="FILE",
                     help="a node's configuration: its node.identity and burn.institution name the equipment")
    p.set_defaults(run=_burn)


#: ``burn`` flags (``--patient-id``...) naming the patient and study of converted files, by their
#: node.media.capture.IDENTITY_RULES key.
_CAPTURE_FLAGS = {
    "patient_name": "Patient's Name, e.g. DOE^JANE",
    "patient_id": "Patient ID",
    "birth_date": "Patient's Birth Date, YYYYMMDD",
    "sex": "Patient's Sex: M, F or O",
    "study_description": "Study Description of the new study",
    "accession_number": "Accession Number of the new study",
    "study_uid": "join this study (alone: a DICOM study of this burn) instead of making a new one",
}


def _burn(args: argparse.Namespace, out: TextIO) -> int:
    from node.errors import UsageError
    from node.media.build import burn
    from node.media.compress import Policy
    from node.media.pdi import choose_pdi
    from node.media.plan import Options
    from node.profiles import get_profile
    from node.syntaxes import Compression

    profile = get_profile(args.profile)
    pdi = choose_pdi(profile, pdi=args.pdi, web=args.web, viewer=args.viewer, institution=args.institution,
                     contact=args.contact)
    if args.allow_burned_in and not args.deidentify:
        raise UsageError("--allow-burned-in is only for --deidentify")
    compression = Compression(args.compress.lower(), quality=args.quality, ratio=args.ratio, psnr=args.psnr)
    options = Options(compress=compression, new_uids=args.new_uids, deidentify=args.deidentify,
                      burned_in=args.allow_burned_in, repair=args.repair,
                      policy=Policy(lossy_mammography=args.allow_lossy_mammography,
                                    bit_reduction=args.allow_bit_reduction))
    with _ProgressBar(sys.stderr, enabled=not args.json) as bar:
        report = burn(args.sources, out=args.out, profile=profile, fmt=args.format, label=args.label,
                      invent_patient_id=args.invent_patient_id, options=options, progress=bar.advance,
                      total=bar.start,
                      capture={k: getattr(args, k) for k in _CAPTURE_FLAGS if getattr(args, k) is not None}, pdi=pdi,
                      equipment=_equipment(args))
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(
            f"{report.out}: {counted(report.instances, 'instance')}, {counted(report.studies, 'study')}, "
            f"{counted(report.patients, 'patient')}, {report.bytes / 1e6:,.1f} MB, {report.sectors:,} sectors, "
            f"{report.profile}\n"
        )
        for title, rows, key in (
            ("converted", report.converted, "conversion"),
            ("not as asked", report.fallbacks, "reason"),
            ("repaired", report.repaired, "repair"),
            ("refused", report.refused, "reason"),
            ("skipped", report.skipped, "reason"),
            ("duplicate (copy kept: ...)", report.duplicates, "kept"),
        ):
            for line in _report_lines(rows, key):
                out.write(f"  {title}: {line}\n")
        for line in report.invented:
            out.write(f"  invented: {line}\n")
        for line in report.adjusted:
            out.write(f"  adjusted: {line}\n")
    return EXIT_DATA if report.refused else EXIT_OK


def _equipment(args: argparse.Namespace) -> Equipment:
    """The node as the equipment of captured files: ``--config``'s node.identity and burn.institution
    (``--institution`` wins), else only ``--institution``."""
    from node.media.capture import Equipment

    if args.config is None:
        return Equipment(institution=args.institution)
    from node.config import load_config

    config = load_config(args.config)
    return Equipment(config.node.identity, args.institution or config.burn.institution)


#: More files than this with the same outcome make one summary line (``--json`` lists every file).
_LISTED = 5


def _report_lines(rows: list[dict[str, str]], key: str) -> list[str]:
    """``path: outcome`` per file; a common outcome of many files as one line, so a 4,000-image burn stays readable."""
    by_outcome: dict[str, list[str]] = {}
    for row in rows:
        by_outcome.setdefault(row[key], []).append(row["path"])
    lines = []
    for outcome, paths in by_outcome.items():
        if len(paths) > _LISTED:
            lines.append(f"{len(paths)} files: {outcome} (first: {paths[0]})")
        else:
            lines += [f"{p}: {outcome}" for p in paths]
    return lines


def _add_check(sub: _Subparsers) -> None:
    p = sub.add_parser("check", help="check a medium (folder, image, device): DICOMDIR against the files")
    p.add_argument("path", metavar="PATH", help="media root folder, ISO 9660 / UDF image or block device")
    p.add_argument("--profile", metavar="NAME", help="also check File IDs and syntaxes against this profile")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=_check)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from node.errors import MediumError
    from node.profiles import get_profile
    from node.read.check import CheckReport, Finding, check_medium

    profile = get_profile(args.profile) if args.profile else None
    try:
        report = check_medium(args.path, profile=profile)
    except MediumError as exc:
        if not args.json:
            raise
        # --json promises one object on stdout: the medium as a whole (".") is the problem
        report, code = CheckReport(problems=[Finding(".", str(exc))]), exc.exit_code
    else:
        code = EXIT_OK if report.ok else EXIT_DATA
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        verdict = "ok" if report.ok else counted(len(report.problems), "problem")
        out.write(f"{args.path}: {verdict}, {counted(report.instances, 'instance')}\n")
        for f in report.problems:
            out.write(f"  problem: {f.path}: {f.problem}\n")
        for f in report.notes:
            out.write(f"  note: {f.path}: {f.problem}\n")
        for f in report.warnings:
            out.write(f"  warning: {f.path}: {f.problem}\n")
        if report.medium:
            out.write(f"  medium: {report.medium}\n")
        if report.profiles:
            out.write(f"  satisfies: {', '.join(report.profiles)}\n")
    return code


def _add_import(sub: _Subparsers) -> None:
    p = sub.add_parser("import", help="send every instance of a medium (folder, .iso, /dev/sr0) to an SCP")
    p.add_argument("path", metavar="PATH", help="media root folder, .iso image or optical drive")
    p.add_argument("--to", required=True, metavar="AET@HOST:PORT", help="the destination SCP")
    p.add_argument("--calling-aet", default="MEDIANODE", metavar="AET", help="our AE title (default MEDIANODE)")
    p.add_argument("--patient", metavar="ID", help="import only this patient's instances")
    p.add_argument("--study", metavar="UID", help="import only this study's instances")
    p.add_argument("--reports", metavar="DIR", help="also keep the JSON report in this folder")
    p.add_argument("--config", metavar="FILE",
                   help="a node's configuration: apply its import.coerce or import.reconcile, record the import "
                        "in its index, and skip a medium it imported before (default: none of these); an import "
                        "held for reconciliation exits 3")
    p.add_argument("--force", action="store_true", help="with --config: import a medium imported before again")
    p.add_argument("--associations", type=int, metavar="N",
                   help="associations to send over at once (default: import.associations with --config, "
                        "else one per core, 2 to 4)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    tls = p.add_argument_group("TLS (PS3.15 B.9, BCP 195), as import.destination.tls")
    tls.add_argument("--tls-ca", metavar="FILE", type=Path,
                     help="speak TLS; the destination's certificate must chain to this CA (PEM)")
    tls.add_argument("--tls-certificate", metavar="FILE", type=Path, help="with --tls-ca: our certificate (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", type=Path, help="with --tls-certificate: its key (PEM, unencrypted)")
    p.set_defaults(run=_import)


def _import_tls(args: argparse.Namespace) -> ClientTLS | None:
    """``--tls-*`` as a :class:`ClientTLS`, checked as ``import.destination.tls`` is."""
    from node.config import ClientTLS, unusable_tls
    from node.errors import UsageError

    if args.tls_ca is None:
        if args.tls_certificate or args.tls_key:
            raise UsageError("--tls-certificate and --tls-key need --tls-ca (the CA the destination is verified against)")
        return None
    tls = ClientTLS(args.tls_ca.absolute(), args.tls_certificate and args.tls_certificate.absolute(),
                    args.tls_key and args.tls_key.absolute())
    problem = unusable_tls(tls)
    if problem is not None:
        raise UsageError(f"--tls-{problem[0]} {getattr(tls, problem[0])}: {problem[1]}")
    return tls


def _import(args: argparse.Namespace, out: TextIO) -> int:
    from node.read.importer import import_medium, parse_destination

    destination = parse_destination(args.to)
    tls = _import_tls(args)
    config = None
    if args.config:  # without one, no index, audit or reconciliation: their modules stay unloaded (start-up)
        from node.config import load_config
        from node.intake import associations, import_recorded, reconciling

        config = load_config(args.config)

    def send(import_id: int | None = None) -> ImportReport:
        extra: dict[str, Any] = {} if args.associations is None else {"associations": args.associations}
        if config is not None:
            extra = reconciling(config, import_id, args.calling_aet) if import_id is not None else {}
            extra |= associations(config, args.associations)
        return import_medium(args.path, destination=destination, calling_aet=args.calling_aet, patient=args.patient,
                             study=args.study, reports_dir=args.reports,
                             coerce=config.imports.coerce if config else None, tls=tls, **extra)

    report = import_recorded(Path(args.path), config, force=args.force, send=send,
                                                  destination=args.to) if config else send()
    if isinstance(report, dict):  # a medium imported before, skipped
        if args.json:
            json.dump(report, out, indent=2)
            out.write("\n")
        else:
            out.write(f"{args.path}: skipped: {report['skipped_medium']}\n")
        return EXIT_OK
    _print_import(report, args.json, f"{args.path} -> {args.to}", out)
    return EXIT_HELD if report.held else EXIT_OK if report.ok else EXIT_DATA


def _print_import(report: ImportReport, as_json: bool, what: str, out: TextIO) -> None:
    """An import's report: the ``--json`` object, or a summary and the lines worth reading."""
    if as_json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        held = f", {report.held} held" if report.held else ""
        out.write(f"{what}: {report.sent} sent, {report.failed} failed, "
                  f"{report.skipped} skipped{held} in {report.seconds:.1f} s\n")
        alike: dict[tuple[str, int | None, str], list[str]] = {}  # a destination down fails every instance alike
        for o in report.outcomes:
            if o.result not in ("sent", "held") or o.status:
                alike.setdefault((o.result, o.status, o.reason), []).append(o.path)
        for (result, code, reason), paths in alike.items():
            status = f" (status 0x{code:04X})" if code is not None else ""
            others = f" and {counted(len(paths) - 1, 'other')} (--json names each)" if len(paths) > 1 else ""
            out.write(f"  {result}: {paths[0]}{others}{status}: {reason}\n")
        for c in report.coercions:
            out.write(f"  coerced: {c.path}: {c.attribute} {'(absent)' if c.old is None else repr(c.old)} -> {c.new!r}\n")
        for f in report.problems:
            out.write(f"  problem: {f.path}: {f.problem}\n")
        rec = report.reconciliation or {}
        for p in rec.get("patients", ()):
            out.write(f"  reconciliation: {p['patient_id'] or '(no ID)'} {p['name']!r}: {p['outcome']}: {p['reason']}\n")
        if rec.get("held"):
            out.write(f"  held, waiting for a person: {rec['held']} (medianode imports --held)\n")
        if report.report_path:
            out.write(f"  report: {report.report_path}\n")


def _add_imports(sub: _Subparsers) -> None:
    p = sub.add_parser("imports", help="the recent imports; those held for reconciliation, and resolving them")
    _config_option(p)
    p.add_argument("action", nargs="?", choices=("list", "resolve"), default="list")
    p.add_argument("id", nargs="?", type=int, help="the held import (for resolve)")
    p.add_argument("--held", action="store_true", help="only the imports waiting for a person, with their candidates")
    p.add_argument("--json", action="store_true", help="print JSON")
    choice = p.add_argument_group("resolve: one of").add_mutually_exclusive_group()
    choice.add_argument("--patient-id", metavar="ID", help="send with this Patient ID of our domain")
    choice.add_argument("--candidate", metavar="N", type=int, help="send with candidate N (medianode imports --held)")
    choice.add_argument("--as-is", action="store_true", help="send with the medium's own identity")
    choice.add_argument("--refuse", action="store_true", help="send nothing, and remove the held copy")
    p.add_argument("--issuer", metavar="ISSUER", help="with --patient-id: its Issuer of Patient ID")
    p.add_argument("--patient", metavar="ID", help="the medium's Patient ID, when several of its patients wait")
    p.set_defaults(run=_imports)


def _imports(args: argparse.Namespace, out: TextIO) -> int:
    from node import holds
    from node.errors import UsageError

    if args.action == "list" and (args.patient_id or args.candidate is not None or args.as_is or args.refuse):
        raise UsageError("--patient-id, --candidate, --as-is and --refuse are for imports resolve ID")
    if args.issuer and not args.patient_id:
        raise UsageError("--issuer goes with --patient-id")
    config, index = _open_index(args)
    try:
        if args.action == "list":
            rows = holds.held(index, config) if args.held else index.imports(limit=100)
            if args.json:
                out.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
            else:
                _print_imports(rows, held=args.held, out=out)
            return EXIT_OK
        if args.id is None:
            raise UsageError("imports resolve needs the held import's id (medianode imports --held)")
        kind: holds.Kind | None = ("patient-id" if args.patient_id else "candidate" if args.candidate is not None else
                "as-is" if args.as_is else "refuse" if args.refuse else None)
        if kind is None:
            raise UsageError("imports resolve needs one of --patient-id, --candidate, --as-is, --refuse")
        choice = holds.Choice(kind, number=args.candidate or 0, patient_id=args.patient_id or "",
                              issuer=args.issuer or "")
        report = holds.resolve(index, config, args.id, choice, by=_os_user(), patient=args.patient)
        if report is None:
            state = index.import_record(args.id) or {}
            out.write(f"import {args.id}: {choice}: {'refused, its held copy removed' if args.refuse else 'noted'}"
                      f"{'; still waiting: ' + str(state['held_reason']) if state.get('state') == 'held' else ''}\n")
            return EXIT_HELD if state.get("state") == "held" else EXIT_OK
        _print_import(report, args.json, f"import {args.id} ({choice})", out)
        return EXIT_OK if report.ok else EXIT_DATA
    finally:
        index.close()


def _print_imports(rows: list[dict[str, object]], *, held: bool, out: TextIO) -> None:
    if not rows:
        out.write("no held import\n" if held else "no import\n")
    for row in rows:
        if not held:
            out.write(f"{row['id']:>5}  {row['state']:<9} {_when(row['finished'])}  {row['sent']} sent, "
                      f"{row['failed']} failed  {row['medium']}\n")
            continue
        out.write(f"import {row['id']}: {row['medium']}, held since {_when(row['since'])}: {row['reason']}\n")
        for p in row["patients"]:  # type: ignore[attr-defined]
            out.write(f"  on the medium: {p['patient_id'] or '(no ID)'} {p['name']!r} born {p['birth_date'] or '?'} "
                      f"sex {p['sex'] or '?'}: {p['outcome']}\n")
            for n, c in enumerate(p["candidates"], 1):
                extra = f", accession {c['accession']}" if c["accession"] else ""
                out.write(f"    candidate {n} ({c['source']}): {c['patient_id']}"
                          f"{' / ' + c['issuer'] if c['issuer'] else ''} {c['name']!r} born {c['birth_date'] or '?'} "
                          f"sex {c['sex'] or '?'}{extra}\n")


def _add_conformance(sub: _Subparsers) -> None:
    p = sub.add_parser("conformance", help="print our DICOM Conformance Statement (PS3.2), made from the code's tables")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    p.set_defaults(run=_conformance)


def _conformance(args: argparse.Namespace, out: TextIO) -> int:
    from node.conformance import render
    from node.durable import write_atomic

    text = render()
    if args.out is None:
        out.write(text)
        return EXIT_OK
    try:
        write_atomic(Path(args.out), text.encode("utf-8"))
    except OSError as exc:
        raise NodeError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    return EXIT_OK


DEFAULT_CONFIG = os.environ.get("MEDIANODE_CONFIG", "config/medianode.yaml")


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG}, or $MEDIANODE_CONFIG)")


def _add_serve(sub: _Subparsers) -> None:
    p = sub.add_parser("serve", help="run the node: receive, route, burn")
    _config_option(p)
    p.set_defaults(run=lambda args, out: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    from node.service import serve

    return serve(args.config)


def _add_config(sub: _Subparsers) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    check = csub.add_parser("check", help="validate a configuration file (exit 2 with file:line key: reason)")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(run=_config_check)


def _config_check(args: argparse.Namespace, out: TextIO) -> int:
    from node.report import config_check

    config, warnings = config_check(args.file)
    for warning in warnings:
        print(warning, file=sys.stderr)
    out.write(f"{args.file}: ok, {counted(len(config.routes), 'route')}, data in {config.node.data_dir}\n")
    return EXIT_OK


def _add_catalogue(sub: _Subparsers) -> None:
    p = sub.add_parser("catalogue", help="the catalogue several stations share (node.catalogue)")
    csub = p.add_subparsers(dest="catalogue_command", required=True, parser_class=_Parser)
    migrate = csub.add_parser("migrate", help="bring the catalogue's schema up to date (serve does it at start-up)")
    copy = csub.add_parser("copy", help="copy this station's history (its index) into the catalogue")
    for command, run in ((migrate, _catalogue_migrate), (copy, _catalogue_copy)):
        _config_option(command)
        command.set_defaults(run=run)


def _catalogue_node(config: Config) -> NodeConfig:

    if config.node.catalogue is None:
        raise ConfigError(f"{config.source}: node.catalogue is not set: this station has no catalogue")
    return config.node


def _catalogue_migrate(args: argparse.Namespace, out: TextIO) -> int:
    from node.catalogue import feeder, link
    from node.config import load_config

    node = _catalogue_node(load_config(args.config))
    applied = feeder.migrate(node)
    out.write(f"catalogue {link.where(node)}: " + (f"migrated to version {applied[-1]}\n" if applied
                                                    else "up to date\n"))
    return EXIT_OK


def _catalogue_copy(args: argparse.Namespace, out: TextIO) -> int:
    from node.catalogue import feeder, link

    config, index = _open_index(args)
    try:
        node = _catalogue_node(config)
        copied = feeder.copy_history(index, node)
    finally:
        index.close()
    out.write(f"catalogue {link.where(node)}: {counted(copied, 'record')} of station {node.station_name} copied\n")
    return EXIT_OK


def _add_routes(sub: _Subparsers) -> None:
    p = sub.add_parser("routes", help="what the routes do with instances")
    rsub = p.add_subparsers(dest="routes_command", required=True, parser_class=_Parser)
    explain = rsub.add_parser("explain", help="which route each instance matches (and why not the earlier ones), "
                                              "and the jobs each study would make: a dry run of the routes")
    explain.add_argument("paths", nargs="*", metavar="PATH", help="DICOM files or folders (searched recursively)")
    explain.add_argument("--study", metavar="UID", help="the instances of this study in the node's index instead")
    _config_option(explain)
    explain.add_argument("--called-aet", default="", metavar="AET",
                         help="the called AE title of files whose File Meta has no Receiving AE Title (0002,0018)")
    explain.add_argument("--calling-aet", default="", metavar="AET",
                         help="the calling AE title of files whose File Meta has no Sending AE Title (0002,0017)")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(run=_routes_explain)


def _routes_explain(args: argparse.Namespace, out: TextIO) -> int:
    from node import report, routing
    from node.config import load_config
    from node.errors import UsageError

    if bool(args.paths) == bool(args.study):
        raise UsageError("routes explain needs PATH... or --study UID (not both)")
    requests: dict[str, int] = {}
    if args.study:
        config, index = _open_index(args)
        try:
            found = report.study_routing(index, config.routes, args.study)
            requests = index.study_requests(args.study)
        finally:
            index.close()
        if found is None:
            raise UsageError(f"the index holds no instance of study {args.study}")
        each, studies = found
    else:
        from node.media.sources import walk

        config = load_config(args.config)
        instances = []
        for path in walk(args.paths):
            try:
                instances.append(_routing_facts(path, called=args.called_aet, calling=args.calling_aet))
            except NodeError:
                if path in args.paths:  # named itself, not found in a folder
                    raise
                logger.info("%s: not DICOM, skipped", path)  # a folder's other files
        each, studies = routing.explain(config.routes, instances)
    if args.json:
        json.dump({**report.explanation(each, studies), "media_requests": requests}, out, indent=2)
        out.write("\n")
    else:
        out.write(report.format_explanation(each, studies))
        out.write(report.format_requests(requests, burned=any(s.jobs for s in studies)))
    return EXIT_OK


def _routing_facts(path: str, *, called: str, calling: str) -> routing.Instance:
    """What routing looks at of one file, read as the receiver reads it; the AE titles from its File Meta
    (Sending / Receiving Application Entity Title, PS3.10 7.1) when present, else ``called`` / ``calling``."""
    from node import dcmio, routing
    from node.receive.instance import UnreadableDataSet, read_instance
    from node.tags import RECEIVING_APPLICATION_ENTITY_TITLE, SENDING_APPLICATION_ENTITY_TITLE

    try:
        inst = read_instance(path)
    except (UnreadableDataSet, OSError) as exc:
        raise NodeError(f"{path}: cannot be read as DICOM: {exc}") from None
    return routing.Instance(path, inst.study_uid, inst.sop_instance_uid, inst.modality, inst.sop_class_uid,
                            dcmio.text(inst.meta.get(RECEIVING_APPLICATION_ENTITY_TITLE)) or called,
                            dcmio.text(inst.meta.get(SENDING_APPLICATION_ENTITY_TITLE)) or calling)


def _open_index(args: argparse.Namespace, *, create: bool = False) -> tuple[Config, Index]:
    """The configuration and its node's index; ``create``: make them when the node has not run yet."""
    from node.config import load_config
    from node.index import Index

    config = load_config(args.config)
    path = config.node.data_dir / "index.sqlite"
    if create:
        try:
            config.node.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"node.data_dir {config.node.data_dir}: cannot be made: {exc.strerror or exc}") from None
    elif not path.exists():
        raise ConfigError(f"{path} does not exist: has medianode serve run with {args.config}?")
    return config, Index(path)


def _add_status(sub: _Subparsers) -> None:
    p = sub.add_parser("status", help="studies receiving, jobs, volumes written today")
    _config_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_status)


def _status(args: argparse.Namespace, out: TextIO) -> int:
    from node import report

    config, index = _open_index(args)
    try:
        status = report.status(index, config)
    finally:
        index.close()
    if args.json:
        json.dump(status, out, indent=2)
        out.write("\n")
    else:
        out.write(report.format_status(status))
    return EXIT_OK


def _add_audit(sub: _Subparsers) -> None:
    p = sub.add_parser("audit", help="print the node's audit log (JSON lines); the reading is audited too")
    _config_option(p)
    p.add_argument("--since", metavar="TIME", help="only events at or after TIME (2026-01-31 or 2026-01-31T08:00, "
                   "local time unless it names its offset)")
    p.set_defaults(run=_audit)


def _audit(args: argparse.Namespace, out: TextIO) -> int:
    from node import audit
    from node.config import load_config

    since = audit.parse_since(args.since) if args.since else None
    for line in audit.read(load_config(args.config), since=since):
        out.write(line)
    return EXIT_OK


def _add_jobs(sub: _Subparsers) -> None:
    p = sub.add_parser("jobs", help="list, retry or cancel burn jobs")
    _config_option(p)
    p.add_argument("action", nargs="?", choices=("list", "retry", "cancel"), default="list")
    p.add_argument("id", nargs="?", type=int, help="the job (for retry and cancel)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_jobs)


def _jobs(args: argparse.Namespace, out: TextIO) -> int:
    from node import actions, report
    from node.errors import UsageError

    config, index = _open_index(args)
    try:
        if args.action == "list":
            rows, warning = report.listed_jobs(index, config)
            if warning:
                print(f"medianode jobs: {warning}", file=sys.stderr)
            out.write(json.dumps(rows, indent=2) + "\n" if args.json else report.format_jobs(rows))
            return EXIT_OK
        if args.id is None:
            raise UsageError(f"jobs {args.action} needs a job id")
        move = actions.retry if args.action == "retry" else actions.cancel
        old, new = move(index, config, args.id, by=_os_user())
        out.write(f"job {args.id}: {old} -> {new}\n")
        return EXIT_OK
    finally:
        index.close()


def _add_volumes(sub: _Subparsers) -> None:
    p = sub.add_parser("volumes", help="which archive volume holds what; re-burn a lost disc")
    _config_option(p)
    p.add_argument("action", nargs="?", choices=("list", "reburn"), default="list")
    p.add_argument("label", nargs="?", help="the volume (for reburn)")
    p.add_argument("--study", metavar="UID", help="only volumes holding this study")
    p.add_argument("--patient", metavar="ID", help="only volumes holding this patient")
    p.add_argument("--date", metavar="YYYYMMDD[-YYYYMMDD]", default="",
                   help="only volumes holding a study of this Study Date or range (either end may be left open)")
    p.add_argument("--accession", metavar="A", default="", help="only volumes holding a study of this Accession Number")
    p.add_argument("--copies", type=int, metavar="N", help="reburn: this many copies (default: as its route says)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_volumes)


def _volumes(args: argparse.Namespace, out: TextIO) -> int:
    from node import actions, report
    from node.errors import UsageError

    config, index = _open_index(args)
    try:
        if args.action == "list":
            if args.copies is not None:
                raise UsageError("--copies is for volumes reburn")
            rows, warning = report.listed_volumes(index, config, study=args.study, patient=args.patient,
                                                  date=args.date, accession=args.accession)
            if warning:
                print(f"medianode volumes: {warning}", file=sys.stderr)
            out.write(json.dumps(rows, indent=2) + "\n" if args.json else report.format_volumes(rows))
            return EXIT_OK
        if not args.label:
            raise UsageError("volumes reburn needs a volume label")
        job, cannot = actions.reburn(index, config, args.label, copies=args.copies, by=_os_user())
        copies = "" if args.copies is None else f", {counted(args.copies, 'copy')}"
        out.write(f"volume {args.label}: re-burn queued as job {job}{copies}\n")
        if cannot:
            out.write(f"volume {args.label}: {counted(len(cannot), 'instance')} {'is' if len(cannot) == 1 else 'are'} "
                      f"neither in the spool nor on an image "
                      f"and cannot be re-burned: {', '.join(cannot)}\n")
        return EXIT_OK
    finally:
        index.close()


class _Roles:
    """``node.users.ROLES`` as argparse's ``choices``, loaded only when a role is checked or listed: the parser
    is built for every command, and the users module brings argon2, the index and the audit trail."""

    def __iter__(self) -> Iterator[str]:
        from node.users import ROLES

        return iter(ROLES)

    def __contains__(self, role: object) -> bool:
        return role in list(self)


def _add_users(sub: _Subparsers) -> None:
    p = sub.add_parser("users", help="who may use the console and the API: users, roles, API tokens")
    usub = p.add_subparsers(dest="users_command", required=True, parser_class=_Parser)
    # no abbreviations: "--password SECRET" is refused, never taken for --password-stdin
    add = usub.add_parser("add", help="add a user (the password is read from standard input)", allow_abbrev=False)
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=_Roles(), metavar="ROLE",
                     help="viewer reads; clerk also retries, cancels and re-burns; admin also manages users")
    passwd = usub.add_parser("passwd", help="set a user's password (read from standard input); ends its sessions",
                             allow_abbrev=False)
    passwd.add_argument("name", metavar="NAME")
    for q in (add, passwd):
        q.add_argument("--password-stdin", action="store_true", required=True,
                       help="read the password from standard input (never from the command line)")
    listing = usub.add_parser("list", help="the users and their roles")
    remove = usub.add_parser("remove", help="remove a user: its sessions end, its tokens stop working")
    remove.add_argument("name", metavar="NAME")
    token = usub.add_parser("token", help="make a new API token for a user and print it (shown only this once)")
    token.add_argument("name", metavar="NAME")
    tokens = usub.add_parser("tokens", help="a user's API tokens: id, made, last used")
    tokens.add_argument("name", metavar="NAME")
    revoke = usub.add_parser("revoke", help="revoke one of a user's API tokens")
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("token_id", metavar="TOKEN-ID")
    for q in (listing, tokens):
        q.add_argument("--json", action="store_true", help="print JSON")
    for q in (add, passwd, listing, remove, token, tokens, revoke):
        _config_option(q)
    p.set_defaults(run=_users)


def _users(args: argparse.Namespace, out: TextIO) -> int:
    from node import actions, users

    config, index = _open_index(args, create=True)
    by, command = _os_user(), args.users_command
    try:
        if command == "add":
            user = actions.add_user(index, config, args.name, args.role, _password_stdin(), by=by)
            out.write(f"user {user.name} added, role {user.role}\n")
        elif command == "passwd":
            actions.set_password(index, config, args.name, _password_stdin(), by=by)
            out.write(f"user {args.name}: password changed, sessions ended\n")
        elif command == "remove":
            actions.remove_user(index, config, args.name, by=by)
            out.write(f"user {args.name} removed, sessions ended, tokens revoked\n")
        elif command == "token":
            out.write(actions.new_token(index, config, args.name, by=by)[1] + "\n")
        elif command == "revoke":
            actions.revoke_token(index, config, args.name, args.token_id, by=by)
            out.write(f"user {args.name}: token {args.token_id} revoked\n")
        elif command == "list":
            found = users.list_users(index)
            out.write(json.dumps([u._asdict() for u in found], indent=2) + "\n" if args.json
                      else "".join(f"{u.name}  {u.role}\n" for u in found))
        else:
            rows = users.tokens(index, args.name)
            out.write(json.dumps(rows, indent=2) + "\n" if args.json else "".join(
                f"{t['id']}  made {_when(t['created'])}  last used {_when(t['last_used'])}\n" for t in rows))
        return EXIT_OK
    finally:
        index.close()


def _password_stdin() -> str:
    """The password on standard input, less one line end (``echo pw |`` adds one)."""
    text = sys.stdin.read()
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _when(t: object) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(t))))


def _os_user() -> str:
    """Who runs a command, for the audit log (the user id when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def _parser() -> _Parser:
    parser = _Parser(prog="medianode", description="A DICOM node that bridges the network and removable media.")
    parser.add_argument("--version", action="version", version=f"medianode {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[_Subparsers], None]] = [
    _add_serve, _add_burn, _add_check, _add_import, _add_status, _add_jobs, _add_volumes, _add_config,
    _add_routes, _add_conformance, _add_audit, _add_users, _add_imports, _add_catalogue,
]


#: The status of a command whose reader stopped reading (``medianode status | head -c 10``): what a
#: shell reports for a tool that SIGPIPE ended (128 + 13), so that a pipeline sees output was cut.
EXIT_CLOSED_OUTPUT = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``medianode`` with ``argv``; return the exit status.

    A reader that closes our standard output early ends the command quietly
    with :data:`EXIT_CLOSED_OUTPUT`, as it ends other command-line tools; a
    broken pipe of anything else (a socket, a child process) is not hidden.
    """
    try:
        code = _run(argv, out or sys.stdout)
        sys.stdout.flush()  # now, not at exit, so that a closed pipe is seen here
        return code
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)  # what is still buffered goes nowhere, silently, at exit
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_OUTPUT


def _reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe or socket whose reader has closed it (poll reports an error or hang-up)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO), or closed
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def _run(argv: Sequence[str] | None, out: TextIO) -> int:
    filemodes.restrict()  # whatever the caller's umask: what any command writes is the user's alone
    try:
        args = _parser().parse_args(argv)
    except _Usage as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(verbose=args.verbose, service=args.command == "serve")
    try:
        return int(args.run(args, out))
    except NodeError as exc:
        for problem in exc.problems if isinstance(exc, ConfigError) else (str(exc),):
            print(f"medianode {args.command}: {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"medianode {args.command}: interrupted; nothing was published", file=sys.stderr)
        return 130


def _configure_logging(*, verbose: bool, service: bool = False) -> None:
    """Our messages on stderr (a service logs one line per event, INFO); libraries' only with ``--verbose``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(logging.Filter("node"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO if service else logging.WARNING)
    if not verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class _ProgressBar:
    """A one-line progress bar on a terminal; silent when stderr is not a tty."""

    WIDTH = 30

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.total = self.done = 0
        self.shown = -1

    def start(self, total: int) -> None:
        self.total = max(total, 1)

    def advance(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        percent = min(100, self.done * 100 // max(self.total, 1))
        if percent != self.shown:
            self.shown = percent
            filled = self.WIDTH * percent // 100
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {percent:3d}%  "
                              f"{self.done / 1e6:,.0f} of {self.total / 1e6:,.0f} MB")
            self.stream.flush()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.shown >= 0:
            self.stream.write("\n")
