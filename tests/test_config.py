"""node.config: the embedded default, every value a key may take, and one line per error.

Each error case asserts the whole message, so the file, the line and the key path
are all pinned; the fuzz test asserts that nothing but ConfigError ever escapes.
"""

from __future__ import annotations

import random
import re
from ipaddress import ip_network
from pathlib import Path

import pytest

from node.config import (
    TLS,
    BurnConfig,
    Config,
    Destination,
    ImportConfig,
    Match,
    NodeConfig,
    Route,
    load_config,
    parse_config,
)
from node.errors import EXIT_USAGE, ConfigError
from node.profiles import PROFILES
from node.syntaxes import Compression

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "config" / "medianode.yaml"
ALL_PROFILES = ", ".join(PROFILES)
LONG_UID = "1.2" + ".3" * 31  # 65 characters


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative paths resolve against the working directory: make it a fresh one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error(text: str) -> str:
    """The message ``parse_config`` raises for ``text`` (named c.yaml)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    assert info.value.exit_code == EXIT_USAGE
    return str(info.value)


# -- What loads ---------------------------------------------------------------


def test_embedded_default_is_what_design_md_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # as scripts/serve runs it
    config = load_config("config/medianode.yaml")
    assert config == Config(
        node=NodeConfig(ae_title="MEDIANODE", host="127.0.0.1", port=11112, data_dir=ROOT / "var"),
        burn=BurnConfig(output=ROOT / "var" / "out", study_stable_seconds=30.0),
        routes=(
            Route(Match(called_aet=("BURN",)), "burn", profile="STD-GEN-CD", where="config/medianode.yaml:22"),
        ),
        imports=ImportConfig(inbox=ROOT / "var" / "inbox", destination=Destination("PACS", "127.0.0.1", 104)),
        source=DEFAULT,
    )
    assert config.called_aets == {"MEDIANODE", "BURN"}
    assert isinstance(config.burn.study_stable_seconds, float)


def test_relative_paths_resolve_against_the_working_directory(_cwd: Path) -> None:
    config = load_config(DEFAULT)
    assert config.node.data_dir == _cwd / "var"
    assert config.burn.output == _cwd / "var" / "out"
    assert config.source == DEFAULT
    assert config.routes[0].where == f"{DEFAULT}:22"


def test_absent_keys_take_the_defaults_with_absolute_paths(_cwd: Path) -> None:
    config = parse_config("node:\nburn: {}\n", source="c.yaml")
    assert config == Config(
        node=NodeConfig(data_dir=_cwd / "var"),
        burn=BurnConfig(output=_cwd / "var" / "out"),
        imports=ImportConfig(inbox=_cwd / "var" / "inbox"),
        source=_cwd / "c.yaml",
    )


def test_every_key(_cwd: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (_cwd / name).write_text("-----BEGIN-----\n")
    config = parse_config(
        """\
node:
  ae_title: "  ARCHIVE "
  host: 0.0.0.0
  port: 104
  data_dir: /srv/medianode
  allowed_calling_aets: CT1
  allowed_peers:
    CT2: [10.0.0.0/24, 192.168.1.7, "2001:db8::/32"]
    " MR 1 ": ::1
  extra_sop_classes: [1.2.3.0.4, 1.3]
  workers: 64
  max_associations: 1000
  min_free_mb: 0
  max_pdu: 4096
  tls: {certificate: cert.pem, key: ./key.pem, ca: ca.pem}
  group: root
burn: {output: out, study_stable_seconds: 0.5, retention_hours: 0}
routes:
  - match: {called_aet: [DVD, " BR "], calling_aet: CT1, modality: [CT, MR], sop_class: 1.2.840.10008.5.1.4.1.1.2}
    action: BURN
    profile: std-gen-dvd-jpeg
    compress: jpeg-lossless
    copies: 99
    group: patient
    label: 2024
    kind: backup
    output: ~/discs
  - {action: store, match: }
  - action: reject
import:
  inbox: in
  destination: {ae_title: PACS, host: pacs.example, port: 11112}
""",
        source="c.yaml",
    )
    assert config.node == NodeConfig(
        ae_title="ARCHIVE", host="0.0.0.0", port=104, data_dir=Path("/srv/medianode"),
        allowed_calling_aets=("CT1",), extra_sop_classes=("1.2.3.0.4", "1.3"), workers=64,
        allowed_peers=(("CT2", (ip_network("10.0.0.0/24"), ip_network("192.168.1.7/32"), ip_network("2001:db8::/32"))),
                       ("MR 1", (ip_network("::1/128"),))),
        max_associations=1000, min_free_mb=0, max_pdu=4096,
        tls=TLS(_cwd / "cert.pem", _cwd / "key.pem", _cwd / "ca.pem"), group="root",
    )
    assert config.burn == BurnConfig(output=_cwd / "out", study_stable_seconds=0.5, retention_hours=0.0)
    assert config.routes == (
        Route(
            Match(called_aet=("DVD", "BR"), calling_aet=("CT1",), modality=("CT", "MR"),
                  sop_class=("1.2.840.10008.5.1.4.1.1.2",)),
            "burn", profile="STD-GEN-DVD-JPEG", compress=Compression("jpeg-lossless"), copies=99, group="patient",
            label="2024", kind="backup", output=_cwd / "~" / "discs", where="c.yaml:19",
        ),
        Route(Match(), "store", where="c.yaml:28"),
        Route(Match(), "reject", where="c.yaml:29"),
    )
    assert config.imports == ImportConfig(_cwd / "in", Destination("PACS", "pacs.example", 11112))
    assert config.imports.watch is True  # a destination is set
    assert config.called_aets == {"ARCHIVE", "DVD", "BR"}


def test_empty_values_mean_none_where_none_is_allowed() -> None:
    config = parse_config("node: {tls: ~}\nroutes:\nimport: {destination: , eject: ~}\n", source="c.yaml")
    assert (config.node.tls, config.routes, config.imports.destination, config.imports.eject) == (None, (), None, None)


def test_every_import_key(_cwd: Path) -> None:
    config = parse_config(
        """\
import:
  inbox: in
  destination: {ae_title: PACS, host: h, port: 104}
  watch: off
  mount_roots: [/media, mnt]
  drives: /dev/sr0
  settle_seconds: 0.2
  poll_seconds: 1
  eject: [eject, '{device}']
  calling_aet: " READER "
  associations: 3
""",
        source="c.yaml",
    )
    assert config.imports == ImportConfig(
        inbox=_cwd / "in", destination=Destination("PACS", "h", 104), watch=False,
        mount_roots=(Path("/media"), _cwd / "mnt"), drives=(Path("/dev/sr0"),), settle_seconds=0.2,
        poll_seconds=1.0, eject=("eject", "{device}"), calling_aet="READER", associations=3,
    )
    assert isinstance(config.imports.poll_seconds, float)


@pytest.mark.parametrize(
    "text, watch",
    [
        ("import: {inbox: in}", False),  # no destination: nothing to watch for
        ("import: {destination: {ae_title: P, host: h, port: 1}}", True),
        ("import: {destination: {ae_title: P, host: h, port: 1}, watch: no}", False),
        ("import: {destination: {ae_title: P, host: h, port: 1}, watch: true}", True),
        ("import: {watch: false}", False),
    ],
)
def test_watch_defaults_to_having_a_destination(text: str, watch: bool) -> None:
    imports = parse_config(text, source="c.yaml").imports
    assert imports.watch is watch
    assert (imports.mount_roots, imports.drives, imports.eject, imports.calling_aet, imports.associations) == (
        (Path("/media"), Path("/run/media")), (), None, None, None)
    assert (imports.settle_seconds, imports.poll_seconds) == (5.0, 2.0)


def test_text_is_taken_as_written() -> None:
    """YAML 1.1 would make these a bool, an octal int and a float; where text is expected they stay text."""
    route = parse_config("routes: [{match: {calling_aet: NO, modality: '0123'}, action: burn, label: 1.10}]",
                         source="c.yaml").routes[0]
    assert (route.match.calling_aet, route.match.modality, route.label) == (("NO",), ("0123",), "1.10")


# -- Compression against the profile -------------------------------------------


def brief_allows(profile: str, compress: str) -> bool:
    """The rule as DESIGN states it, by name, to check the syntax-driven table against."""
    if compress == "none" or profile.startswith("AUG-"):
        return True
    if compress in ("jpeg-lossless-p14", "rle"):
        return False
    return profile.endswith("-JPEG") if compress.startswith("jpeg-") else profile.endswith("-J2K")


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize(
    "compress",
    ["none", "jpeg-lossless", "jpeg-lossless-p14", "jpeg-baseline", "jpeg-extended", "j2k-lossless", "j2k-lossy", "rle"],
)
def test_compress_against_profile(profile: str, compress: str) -> None:
    text = f"routes:\n  - action: burn\n    profile: {profile}\n    compress: {compress}\n"
    if brief_allows(profile, compress):
        assert parse_config(text, source="c.yaml").routes[0].compress == Compression(compress)
    else:
        assert error(text).startswith(f"c.yaml:4 routes[0].compress: '{compress}' is not allowed by profile {profile} (it allows none")


def test_compress_without_profile_is_checked_against_the_default_profile() -> None:
    assert error("routes: [{action: burn, compress: j2k-lossy}]") == (
        "c.yaml:1 routes[0].compress: 'j2k-lossy' is not allowed by profile STD-GEN-CD (it allows none)"
    )


def test_compress_per_modality_and_the_opt_ins() -> None:
    route = parse_config(
        "routes:\n  - action: burn\n    profile: AUG-GEN-DVD\n    compress: {default: rle, us: jpeg-baseline, MG: none}\n"
        "    lossy_mammography: yes\n    bit_reduction: true\n    new_uids: on\n    deidentify: true\n"
        "    burned_in_annotation: false\n", source="c.yaml").routes[0]
    assert (route.compress, route.compress_by_modality) == (
        Compression("rle"), (("US", Compression("jpeg-baseline")), ("MG", Compression())))
    assert route.lossy_mammography and route.bit_reduction and route.new_uids and route.deidentify
    assert not route.burned_in_annotation


def test_a_modality_compression_the_profile_forbids_names_the_modality() -> None:
    assert error("routes:\n  - action: burn\n    profile: STD-GEN-DVD-JPEG\n    compress: {default: jpeg-lossless, "
                 "US: j2k-lossy}\n") == ("c.yaml:4 routes[0].compress.US: 'j2k-lossy' is not allowed by profile "
                                          "STD-GEN-DVD-JPEG (it allows none, jpeg-lossless, jpeg-baseline, jpeg-extended)")
    assert error("routes: [{action: burn, compress: {CT: gzip}}]").startswith("c.yaml:1 routes[0].compress.CT: 'gzip' is not one of")


def test_a_compression_with_its_lossy_setting() -> None:
    def route(profile: str, compress: str) -> tuple[Compression, tuple[tuple[str, Compression], ...]]:
        r = parse_config(f"routes:\n  - action: burn\n    profile: {profile}\n    compress: {compress}\n",
                         source="c.yaml").routes[0]
        return r.compress, r.compress_by_modality

    assert route("STD-GEN-DVD-JPEG", "{syntax: jpeg-baseline, quality: 85}") == (
        Compression("jpeg-baseline", quality=85), ())
    assert route("STD-GEN-DVD-J2K", "{syntax: j2k-lossy, ratio: 15}") == (Compression("j2k-lossy", ratio=15.0), ())
    assert route("STD-GEN-DVD-J2K", "{syntax: J2K-LOSSY, psnr: 45.5}") == (Compression("j2k-lossy", psnr=45.5), ())
    assert route("STD-GEN-DVD-J2K", "{syntax: j2k-lossless}") == (Compression("j2k-lossless"), ())
    by_modality = ("\n      default: jpeg-lossless\n      US: {syntax: jpeg-baseline, quality: 80}\n"
                   "      CT:\n        syntax: jpeg-extended\n        quality: 95\n      MG: none")
    assert route("STD-GEN-DVD-JPEG", by_modality) == (Compression("jpeg-lossless"), (
        ("US", Compression("jpeg-baseline", quality=80)), ("CT", Compression("jpeg-extended", quality=95)),
        ("MG", Compression())))


SETTING_ERRORS = {
    "{syntax: jpeg-baseline, quality: 0}": "routes[0].compress.quality: expected an integer from 1 to 100, got '0'",
    "{syntax: jpeg-baseline, quality: 101}": "routes[0].compress.quality: expected an integer from 1 to 100, got '101'",
    "{syntax: jpeg-baseline, quality: 85.5}": "routes[0].compress.quality: expected an integer from 1 to 100, got '85.5'",
    "{syntax: jpeg-baseline, quality: high}": "routes[0].compress.quality: expected an integer from 1 to 100, got 'high'",
    "{syntax: j2k-lossy, ratio: 1}": "routes[0].compress.ratio: expected a number from 2 to 200, got '1'",
    "{syntax: j2k-lossy, ratio: 200.5}": "routes[0].compress.ratio: expected a number from 2 to 200, got '200.5'",
    "{syntax: j2k-lossy, psnr: 29}": "routes[0].compress.psnr: expected a number from 30 to 100, got '29'",
    "{syntax: j2k-lossy, psnr: .inf}": "routes[0].compress.psnr: expected a number from 30 to 100, got '.inf'",
    "{syntax: j2k-lossy, quality: 80}": "routes[0].compress.quality: applies to jpeg-baseline, jpeg-extended only",
    "{syntax: jpeg-lossless, quality: 80}": "routes[0].compress.quality: applies to jpeg-baseline, jpeg-extended only",
    "{syntax: jpeg-baseline, ratio: 10}": "routes[0].compress.ratio: applies to j2k-lossy only",
    "{syntax: j2k-lossy, ratio: 10, psnr: 45}": "routes[0].compress.psnr: give ratio or psnr, not both",
    "{quality: 80, syntax: gzip}": "routes[0].compress.syntax: 'gzip' is not one of",
    "{syntax: j2k-lossy, level: 3}": "routes[0].compress.level: unknown key (known: syntax, quality, ratio, psnr)",
    "{syntax: j2k-lossy, ratio: 10, ratio: 12}": "routes[0].compress.ratio: duplicate key (first on line 4)",
}


@pytest.mark.parametrize("compress", list(SETTING_ERRORS))
def test_a_lossy_setting_out_of_range_or_of_another_syntax_is_an_error_with_its_line(compress: str) -> None:
    text = f"routes:\n  - action: burn\n    profile: AUG-GEN-DVD\n    compress: {compress}\n"
    assert error(text).startswith(f"c.yaml:4 {SETTING_ERRORS[compress]}")


def test_a_setting_error_under_a_modality_names_the_modality_and_its_line() -> None:
    text = ("routes:\n  - action: burn\n    profile: AUG-GEN-DVD\n    compress:\n      default: rle\n"
            "      US:\n        syntax: jpeg-baseline\n        quality: 0\n")
    assert error(text) == "c.yaml:8 routes[0].compress.US.quality: expected an integer from 1 to 100, got '0'"
    missing = "routes:\n  - action: burn\n    profile: AUG-GEN-DVD\n    compress: {US: {quality: 80}}\n"
    assert error(missing) == "c.yaml:4 routes[0].compress.US.syntax: required key is missing"
    forbidden = "routes:\n  - action: burn\n    profile: STD-GEN-DVD-JPEG\n    compress: {US: {syntax: j2k-lossy, ratio: 5}}\n"
    assert error(forbidden).startswith("c.yaml:4 routes[0].compress.US: 'j2k-lossy' is not allowed by profile STD-GEN-DVD-JPEG")


# -- One line per error --------------------------------------------------------

CASES = {
    # YAML itself
    "syntax": ("node:\n  port: 1\n bad: [\n", ("c.yaml:3 YAML syntax error: expected <block end>, but found "
               "'<block mapping start>' (while parsing a block mapping on line 1)")),
    "tab": ("node:\n\tport: 1\n", "c.yaml:2 YAML syntax error: found character '\\t' that cannot start any token"),
    "nul": ("node:\n  host: a\x00\n", ("c.yaml:2 YAML syntax error: unacceptable character #x0000: special characters "
            "are not allowed")),
    "two documents": ("node: {}\n---\nburn: {}\n", ("c.yaml:2 YAML syntax error: but found another document "
                      "(expected a single document in the stream on line 1)")),
    "undefined alias": ("node: *nothing\n", "c.yaml:1 YAML syntax error: found undefined alias 'nothing'"),
    "deep": ("[" * 100_000, "c.yaml:1 YAML syntax error: nested more than 32 levels deep"),
    "deep on its line": ("node:\n" + "".join("  " * i + "- \n" for i in range(40)),
                         "c.yaml:33 YAML syntax error: nested more than 32 levels deep"),
    "empty": ("", "c.yaml:1 the file is empty (or only comments): expected a mapping"),
    "only comments": ("# nothing\n\n", "c.yaml:1 the file is empty (or only comments): expected a mapping"),
    "top level list": ("- node\n", "c.yaml:1 expected a mapping of sections (node, burn, routes, import, audit, console, mcm), got a list"),
    "top level scalar": ("node\n", "c.yaml:1 expected a mapping of sections (node, burn, routes, import, audit, console, mcm), got 'node'"),
    # unknown and duplicate keys, at every level
    "unknown section": ("nodes: {}\n", "c.yaml:1 nodes: unknown key (known: node, burn, routes, import, audit, console, mcm)"),
    "unknown node key": ("node:\n  ae_title: X\n  aetitle: X\n", ("c.yaml:3 node.aetitle: unknown key (known: ae_title, "
                         "host, port, data_dir, allowed_calling_aets, allowed_peers, extra_sop_classes, workers, max_associations, "
                         "min_free_mb, max_pdu, idle_seconds, artim_seconds, pdu_seconds, max_connections_per_address, tls, "
                         "group, identity, catalogue, catalogue_password_file, station, shared_spool, lease_seconds)")),
    "unknown burn key": ("\n\n\n\n\n\nburn:\n  outptu: x\n",
                         "c.yaml:8 burn.outptu: unknown key (known: output, study_stable_seconds, retention_hours, pdi, "
                         "institution, contact)"),
    "unknown tls key": ("node: {tls: {cert: a}}", ("c.yaml:1 node.tls.cert: unknown key (known: certificate, key, ca); "
                                          "c.yaml:1 node.tls.certificate: required key is missing; "
                                          "c.yaml:1 node.tls.key: required key is missing")),
    "unknown route key": ("routes:\n  - action: burn\n    copys: 2\n", ("c.yaml:3 routes[0].copys: unknown key (known: "
                          "match, action, also, profile, compress, lossy_mammography, bit_reduction, new_uids, deidentify, burned_in_annotation, repair, copies, group, label, kind, output, pdi, web, viewer, stations)")),
    "unknown match key": ("routes:\n- action: burn\n- match: {aet: X}\n  action: burn\n",
                          "c.yaml:3 routes[1].match.aet: unknown key (known: called_aet, calling_aet, modality, sop_class)"),
    "unknown mcm key": ("mcm: {copys: 2}", ("c.yaml:1 mcm.copys: unknown key (known: profile, output, copies, viewer, "
                        "allow_lossy, deidentify, wait_seconds, keep_hours, stations)")),
    "mcm deidentify": ("mcm: {deidentify: maybe}", "c.yaml:1 mcm.deidentify: expected true or false, got 'maybe'"),
    "mcm profile": ("mcm: {profile: STD-GEN-BR}", ("c.yaml:1 mcm.profile: 'STD-GEN-BR' is not one of STD-GEN-CD, "
                    "STD-GEN-DVD-JPEG, STD-GEN-DVD-J2K, STD-GEN-USB-JPEG, STD-GEN-USB-J2K, STD-GEN-DVD-RAM, STD-GEN-BD, "
                    "STD-GEN-BD-JPEG, STD-GEN-BD-J2K, AUG-GEN-CD, AUG-GEN-DVD, AUG-GEN-DVD-RAM")),
    "mcm copies": ("mcm: {copies: 0}", "c.yaml:1 mcm.copies: expected an integer from 1 to 99, got '0'"),
    "mcm output and profile": ("burn: {output: {kind: xorriso, device: /dev/sr0}}\nmcm: {profile: STD-GEN-USB-JPEG}",
                               "c.yaml mcm: burn.output: STD-GEN-USB-JPEG writes a folder tree, which a disc output "
                               "cannot burn; give mcm its own output"),
    "unknown import key": ("import: {inbx: x}", ("c.yaml:1 import.inbx: unknown key (known: inbox, destination, watch, "
                           "mount_roots, drives, settle_seconds, poll_seconds, eject, calling_aet, associations, coerce, reconcile)")),
    "unknown destination key": ("import:\n  destination: {ae: P}\n",
                                ("c.yaml:2 import.destination.ae: unknown key (known: ae_title, host, port, tls); "
                                 "c.yaml:2 import.destination.ae_title: required key is missing; "
                                 "c.yaml:2 import.destination.host: required key is missing; "
                                 "c.yaml:2 import.destination.port: required key is missing")),
    "odd key": ("burn: {'a b': 1}", "c.yaml:1 burn.'a b': unknown key (known: output, study_stable_seconds, "
                "retention_hours, pdi, institution, contact)"),
    "merge key": ("burn: {<<: {}}", "c.yaml:1 burn.'<<': unknown key (known: output, study_stable_seconds, "
                  "retention_hours, pdi, institution, contact)"),
    "duplicate key": ("node:\n  port: 1\n  port: 2\n", "c.yaml:3 node.port: duplicate key (first on line 2)"),
    "duplicate section": ("node: {}\nnode: {}\n", "c.yaml:2 node: duplicate key (first on line 1)"),
    "section not a mapping": ("burn: [1]\n", ("c.yaml:1 burn: expected a mapping of keys (output, study_stable_seconds, "
                              "retention_hours, pdi, institution, contact), got a list")),
    "unsupported tag": ("node: {host: !env HOST}", "c.yaml:1 node.host: unsupported tag '!env'"),
    # integers
    "port text": ("node:\n  port: abc\n", "c.yaml:2 node.port: expected an integer from 1 to 65535, got 'abc'"),
    "port quoted": ("node: {port: '104'}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got '104' (a quoted string)"),
    "port bool": ("node: {port: on}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got 'on' (a boolean)"),
    "port float": ("node: {port: 104.0}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got '104.0'"),
    "port zero": ("node: {port: 0}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got '0'"),
    "port high": ("node: {port: 65536}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got '65536'"),
    "port list": ("node: {port: [104]}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got a list"),
    "port mapping": ("node: {port: {a: 1}}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got a mapping"),
    "port empty": ("node:\n  port:\n", "c.yaml:2 node.port: expected an integer from 1 to 65535, got an empty value"),
    "port null": ("node: {port: null}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got 'null' (null)"),
    "port huge": ("node: {port: 1" + "0" * 400 + "}", ("c.yaml:1 node.port: expected an integer from 1 to 65535, got "
                  "'1000000000000000000000000000000000000...'")),
    "port too many digits": ("node: {port: 1" + "0" * 5000 + "}", ("c.yaml:1 node.port: expected an integer from 1 to 65535, "
                             "got '1000000000000000000000000000000000000...'")),
    "port no digits": ("node: {port: 0x_}", "c.yaml:1 node.port: expected an integer from 1 to 65535, got '0x_'"),
    "workers": ("node: {workers: 65}", "c.yaml:1 node.workers: expected an integer from 1 to 64, got '65'"),
    "max_associations": ("node: {max_associations: 1001}",
                         "c.yaml:1 node.max_associations: expected an integer from 1 to 1000, got '1001'"),
    "min_free_mb": ("node: {min_free_mb: -1}", "c.yaml:1 node.min_free_mb: expected an integer of 0 or more, got '-1'"),
    "max_pdu small": ("node: {max_pdu: 4095}", ("c.yaml:1 node.max_pdu: expected 0 (our default, 65536) or an integer "
                      "from 4096 to 16777216, got '4095'")),
    "max_pdu big": ("node: {max_pdu: 16777217}", ("c.yaml:1 node.max_pdu: expected 0 (our default, 65536) or an integer "
                    "from 4096 to 16777216, got '16777217'")),
    "copies": ("routes: [{action: burn, copies: 100}]", "c.yaml:1 routes[0].copies: expected an integer from 1 to 99, got '100'"),
    # numbers
    "stable zero": ("burn: {study_stable_seconds: 0}", "c.yaml:1 burn.study_stable_seconds: expected a number above 0, got '0'"),
    "stable text": ("burn: {study_stable_seconds: 30s}", "c.yaml:1 burn.study_stable_seconds: expected a number above 0, got '30s'"),
    "stable bool": ("burn: {study_stable_seconds: yes}",
                    "c.yaml:1 burn.study_stable_seconds: expected a number above 0, got 'yes' (a boolean)"),
    "stable inf": ("burn: {study_stable_seconds: .inf}", "c.yaml:1 burn.study_stable_seconds: expected a number above 0, got '.inf'"),
    "stable nan": ("burn: {study_stable_seconds: .nan}", "c.yaml:1 burn.study_stable_seconds: expected a number above 0, got '.nan'"),
    "retention huge": ("burn: {retention_hours: 1" + "0" * 400 + "}", ("c.yaml:1 burn.retention_hours: expected a number of "
                       "0 or more, got '1000000000000000000000000000000000000...'")),
    "retention": ("burn: {retention_hours: -0.5}", "c.yaml:1 burn.retention_hours: expected a number of 0 or more, got '-0.5'"),
    # AE titles and UIDs (PS3.5 6.2, 9.1)
    "ae long": ("node: {ae_title: ABCDEFGHIJKLMNOPQ}", ("c.yaml:1 node.ae_title: 'ABCDEFGHIJKLMNOPQ' is not an AE title "
                "(PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")),
    "ae backslash": ("node: {ae_title: 'A\\B'}", ("c.yaml:1 node.ae_title: 'A\\\\B' is not an AE title "
                     "(PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")),
    "ae spaces": ("node: {ae_title: '   '}", ("c.yaml:1 node.ae_title: '   ' is not an AE title "
                  "(PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")),
    "ae accent": ("node: {ae_title: ÉCHO}", ("c.yaml:1 node.ae_title: 'ÉCHO' is not an AE title "
                  "(PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")),
    "ae control": ('node: {ae_title: "A\\tB"}', "c.yaml:1 node.ae_title: 'A\\tB' is not an AE title: it holds a control character"),
    "ae empty string": ("node: {ae_title: ''}", "c.yaml:1 node.ae_title: '' is not an AE title: it is empty"),
    "ae in list": ("node:\n  allowed_calling_aets:\n    - CT1\n    - [CT2]\n",
                   "c.yaml:4 node.allowed_calling_aets[1]: expected an AE title, got a list"),
    "uid leading zero": ("node: {extra_sop_classes: [1.2.3, 1.2.03]}", ("c.yaml:1 node.extra_sop_classes[1]: '1.2.03' is not "
                         "a UID (PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")),
    "uid letters": ("node: {extra_sop_classes: 1.2.x}", ("c.yaml:1 node.extra_sop_classes: '1.2.x' is not a UID "
                    "(PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")),
    "uid long": ("node: {extra_sop_classes: " + LONG_UID + "}", (f"c.yaml:1 node.extra_sop_classes: '{LONG_UID[:37]}...' "
                 "is not a UID (PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")),
    "uid empty component": ("routes: [{action: store, match: {sop_class: 1..2}}]", ("c.yaml:1 routes[0].match.sop_class: '1..2' "
                            "is not a UID (PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")),
    # TLS
    "tls without key": ("node:\n  tls:\n    ca: ~\n", ("c.yaml:3 node.tls.certificate: required key is missing; "
                        "c.yaml:3 node.tls.key: required key is missing")),
    "tls missing file": ("node: {tls: {certificate: cert.pem, key: key.pem}}", ("c.yaml:1 node.tls.certificate: no such "
                         "readable file: {cwd}/cert.pem; c.yaml:1 node.tls.key: no such readable file: {cwd}/key.pem")),
    "tls a directory": ("node: {tls: {certificate: ., key: .}}", ("c.yaml:1 node.tls.certificate: no such readable file: "
                        "{cwd}; c.yaml:1 node.tls.key: no such readable file: {cwd}")),
    "tls not a mapping": ("node: {tls: yes}", ("c.yaml:1 node.tls: expected a mapping of keys (certificate, key, ca), got 'yes' "
                          "(a boolean)")),
    # paths and text
    "path empty": ("burn: {output: ''}", "c.yaml:1 burn.output: '' is not a path: it is empty"),
    "path nul": ('burn: {output: "a\\0b"}', "c.yaml:1 burn.output: 'a\\x00b' is not a path: it holds a control character"),
    "host list": ("node: {host: [a, b]}", "c.yaml:1 node.host: expected a host name or address, got a list"),
    "host a command": ("node:\n  host: 'not a host; rm -rf /'\n", "c.yaml:2 node.host: 'not a host; rm -rf /' is not an "
                       "IP address or a host name (RFC 1123: letters, digits, hyphens and dots)"),
    "host unresolved": ("node: {host: no-such-host.invalid}", "c.yaml:1 node.host: 'no-such-host.invalid' does not "
                        "resolve to an address: Name or service not known"),
    "host address typo": ("node: {host: 127.0.0.1.}", "c.yaml:1 node.host: '127.0.0.1.' does not resolve to an address: "
                          "Name or service not known"),
    # callers by address
    "peers a list": ("node: {allowed_peers: [CT1]}", "c.yaml:1 node.allowed_peers: expected a mapping of calling AE "
                     "titles to the addresses and networks each may come from (CT1: [10.0.0.0/24, 192.168.1.7]), got a list"),
    "peers host name": ("node:\n  allowed_peers:\n    CT1: [10.0.0.7, ct1.example]\n", "c.yaml:3 "
                        "node.allowed_peers.CT1[1]: 'ct1.example' is not an IP address or network (10.0.0.7, 10.0.0.0/24, "
                        "2001:db8::/32; host names are not taken)"),
    "peers host bits": ("node:\n  allowed_peers:\n    CT1: 10.0.0.7/24\n", "c.yaml:3 node.allowed_peers.CT1: "
                        "'10.0.0.7/24' has bits set past its prefix length: the network is 10.0.0.0/24"),
    "peers bad prefix": ("node: {allowed_peers: {CT1: 10.0.0.0/33}}", "c.yaml:1 node.allowed_peers.CT1: '10.0.0.0/33' is "
                         "not an IP address or network (10.0.0.7, 10.0.0.0/24, 2001:db8::/32; host names are not taken)"),
    "peers ipv6 host bits": ("node: {allowed_peers: {CT1: '2001:db8::1/32'}}", "c.yaml:1 node.allowed_peers.CT1: "
                             "'2001:db8::1/32' has bits set past its prefix length: the network is 2001:db8::/32"),
    "peers none": ("node:\n  allowed_peers:\n    CT1: []\n", "c.yaml:3 node.allowed_peers.CT1: lists no address: leave "
                   "the title out to refuse it"),
    "peers empty": ("node: {allowed_peers: {CT1: }}", "c.yaml:1 node.allowed_peers.CT1: expected an IP address or network, "
                    "got an empty value"),
    "peers twice": ("node:\n  allowed_peers:\n    CT1: 10.0.0.7\n    'CT1 ': 10.0.0.8\n", "c.yaml:4 "
                    "node.allowed_peers.CT1: duplicate AE title (first on line 3)"),
    "peers bad title": ("node: {allowed_peers: {SEVENTEEN_LETTERS: 10.0.0.7}}", "c.yaml:1 node.allowed_peers: "
                        "'SEVENTEEN_LETTERS' is not an AE title (PS3.5 6.2: 1 to 16 ASCII characters, no backslash, "
                        "not all spaces)"),
    "peers also anywhere": ("node:\n  allowed_calling_aets: [CT1, CT2]\n  allowed_peers: {CT2: 10.0.0.7}\n",
                            "c.yaml:3 node.allowed_peers: CT2: in node.allowed_calling_aets too, which takes a title "
                            "from any address; list each title in one of them"),
    "group unknown": ("node: {group: no-such-group}", "c.yaml:1 node.group: 'no-such-group' is not a group on this machine"),
    # the node's identity (captures' General Equipment)
    "identity unknown key": ("node:\n  identity:\n    station_name: CD1\n    serial: 7\n",
                             "c.yaml:4 node.identity.serial: unknown key (known: station_name, manufacturer_model_name, "
                             "device_serial_number, department, institution_address)"),
    "identity a list": ("node: {identity: [CD1]}", "c.yaml:1 node.identity: expected a mapping of keys (station_name, "
                        "manufacturer_model_name, device_serial_number, department, institution_address), got a list"),
    "station name long": ("node: {identity: {station_name: SEVENTEEN_LETTERS}}", "c.yaml:1 node.identity.station_name: "
                          "'SEVENTEEN_LETTERS' is longer than 16 characters (PS3.5 6.2: SH)"),
    "department backslash": ("node: {identity: {department: 'A\\B'}}", "c.yaml:1 node.identity.department: 'A\\\\B' "
                             "holds a backslash, which separates values in LO (PS3.5 6.2)"),
    "serial not ascii": ("node: {identity: {device_serial_number: Nº7}}", "c.yaml:1 node.identity.device_serial_number: "
                         "'Nº7' holds a character outside the default repertoire (PS3.5 6.1.2.1: printable ASCII)"),
    "model empty": ("node: {identity: {manufacturer_model_name: ''}}", "c.yaml:1 node.identity.manufacturer_model_name: "
                    "'' is not a Long String (LO): it is empty"),
    "address long": ("node: {identity: {institution_address: " + "a" * 1025 + "}}",
                     "c.yaml:1 node.identity.institution_address: '" + "a" * 37 + "...' is longer than 1024 characters "
                     "(PS3.5 6.2: ST)"),
    "repair text": ("routes: [{action: burn, repair: always}]", "c.yaml:1 routes[0].repair: expected true or false, "
                    "got 'always'"),
    "label long": ("routes: [{action: burn, label: " + "L" * 33 + "}]",
                   "c.yaml:1 routes[0].label: 'LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL' is longer than 32 characters"),
    # routes
    "routes mapping": ("routes: {action: burn}", "c.yaml:1 routes: expected a list of routes, got a mapping"),
    "route scalar": ("routes:\n  - burn\n", ("c.yaml:2 routes[0]: expected a mapping of keys (match, action, also, profile, compress, "
                     "lossy_mammography, bit_reduction, new_uids, deidentify, burned_in_annotation, repair, copies, group, "
                     "label, kind, output, pdi, web, viewer, stations), got 'burn'")),
    "no action": ("routes:\n  - action: burn\n  - match: {called_aet: X}\n    profile: STD-GEN-CD\n",
                  "c.yaml:3 routes[1].action: required key is missing"),
    "bad action": ("routes: [{action: copy}]", "c.yaml:1 routes[0].action: 'copy' is not one of burn, store, reject"),
    "bad profile": ("\n" * 13 + "routes: [{action: burn, profile: STD-GEN-BR}]",
                    f"c.yaml:14 routes[0].profile: 'STD-GEN-BR' is not one of {ALL_PROFILES}"),
    "profile bool": ("routes: [{action: burn, profile: [CD]}]", f"c.yaml:1 routes[0].profile: expected one of {ALL_PROFILES}, got a list"),
    "bad compress": ("routes: [{action: burn, compress: zip}]", ("c.yaml:1 routes[0].compress: 'zip' is not one of none, "
                     "jpeg-lossless, jpeg-lossless-p14, jpeg-baseline, jpeg-extended, j2k-lossless, j2k-lossy, rle")),
    "bad group": ("routes: [{action: burn, group: series}]", "c.yaml:1 routes[0].group: 'series' is not one of study, patient"),
    "bad kind": ("routes: [{action: burn, kind: copy}]", "c.yaml:1 routes[0].kind: 'copy' is not one of archive, backup"),
    "match a list": ("routes: [{action: burn, match: [BURN]}]", ("c.yaml:1 routes[0].match: expected a mapping of keys "
                     "(called_aet, calling_aet, modality, sop_class), got a list")),
    "match value a mapping": ("routes: [{action: burn, match: {modality: {CT: 1}}}]",
                              "c.yaml:1 routes[0].match.modality: expected a string, got a mapping"),
    # import
    "destination without port": ("import:\n  destination:\n    ae_title: PACS\n    host: h\n",
                                 "c.yaml:3 import.destination.port: required key is missing"),
    "destination port": ("import: {destination: {ae_title: P, host: h, port: '104'}}",
                         "c.yaml:1 import.destination.port: expected an integer from 1 to 65535, got '104' (a quoted string)"),
    "destination a string": ("import: {destination: PACS@h:104}", ("c.yaml:1 import.destination: expected a mapping of keys "
                             "(ae_title, host, port, tls), got 'PACS@h:104'")),
    "watch text": ("import: {watch: sometimes}", "c.yaml:1 import.watch: expected true or false, got 'sometimes'"),
    "watch quoted": ("import: {watch: 'true'}", "c.yaml:1 import.watch: expected true or false, got 'true' (a quoted string)"),
    "watch tagged": ("import: {watch: !!bool maybe}", "c.yaml:1 import.watch: expected true or false, got 'maybe' (a boolean)"),
    "watch number": ("import: {watch: 1}", "c.yaml:1 import.watch: expected true or false, got '1'"),
    "watch without destination": ("import:\n  inbox: in\n  watch: true\n",
                                  "c.yaml:3 import.watch: needs import.destination: the media found would go nowhere"),
    "watch with empty destination": ("import: {destination: ~, watch: yes}",
                                     "c.yaml:1 import.watch: needs import.destination: the media found would go nowhere"),
    "mount root empty": ("import: {mount_roots: [/media, '']}", "c.yaml:1 import.mount_roots[1]: '' is not a path: it is empty"),
    "mount roots null": ("import:\n  mount_roots:\n", "c.yaml:2 import.mount_roots: expected a path, got an empty value"),
    "drive a mapping": ("import: {drives: [{dev: sr0}]}", "c.yaml:1 import.drives[0]: expected a path, got a mapping"),
    "settle zero": ("import: {settle_seconds: 0}", "c.yaml:1 import.settle_seconds: expected a number above 0, got '0'"),
    "settle text": ("import: {settle_seconds: 5s}", "c.yaml:1 import.settle_seconds: expected a number above 0, got '5s'"),
    "poll negative": ("import: {poll_seconds: -2}", "c.yaml:1 import.poll_seconds: expected a number above 0, got '-2'"),
    "poll inf": ("import: {poll_seconds: .inf}", "c.yaml:1 import.poll_seconds: expected a number above 0, got '.inf'"),
    "no associations": ("import: {associations: 0}", "c.yaml:1 import.associations: expected an integer from 1 to 16, got '0'"),
    "associations not whole": ("import:\n  associations: 2.5\n",
                               "c.yaml:2 import.associations: expected an integer from 1 to 16, got '2.5'"),
    "eject a shell string": ("import: {eject: 'eject {device}'}", ("c.yaml:1 import.eject: expected a command as a list of "
                             "arguments, e.g. [eject, '{device}'] (never a shell string), got 'eject {device}' (a quoted string)")),
    "eject a plain string": ("import:\n  eject: eject /dev/sr0\n", ("c.yaml:2 import.eject: expected a command as a list of "
                             "arguments, e.g. [eject, '{device}'] (never a shell string), got 'eject /dev/sr0'")),
    "eject empty list": ("import:\n  eject: []\n", ("c.yaml:2 import.eject: expected a command as a list of arguments, "
                         "e.g. [eject, '{device}'] (never a shell string), got a list")),
    "eject nested": ("import: {eject: [eject, [x]]}", "c.yaml:1 import.eject[1]: expected an argument, got a list"),
    "eject control": ('import: {eject: [eject, "a\\nb"]}', "c.yaml:1 import.eject[1]: 'a\\nb' is not an argument: it holds a control character"),
    "calling aet long": ("import: {calling_aet: ABCDEFGHIJKLMNOPQ}", ("c.yaml:1 import.calling_aet: 'ABCDEFGHIJKLMNOPQ' is "
                         "not an AE title (PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")),
}

BURN_ONLY = {
    "also": "true", "profile": "STD-GEN-CD", "compress": "none", "copies": "1", "group": "study",
    "label": "X", "kind": "archive", "output": "out", "pdi": "true", "web": "true", "viewer": ".", "repair": "true",
}


@pytest.mark.parametrize("text, message", list(CASES.values()), ids=list(CASES))
def test_error(text: str, message: str, _cwd: Path) -> None:
    assert error(text) == message.replace("{cwd}", str(_cwd))


@pytest.mark.parametrize("action", ["store", "reject"])
@pytest.mark.parametrize("key", list(BURN_ONLY))
def test_burn_settings_on_another_action(action: str, key: str) -> None:
    text = f"routes:\n  - action: burn\n  - action: {action}\n    {key}: {BURN_ONLY[key]}\n"
    assert error(text) == f"c.yaml:4 routes[1].{key}: only for action: burn (this route's action is {action})"


def test_load_config_names_the_path_it_was_given(_cwd: Path) -> None:
    (_cwd / "bad.yaml").write_text("node:\n  port: abc\n")
    with pytest.raises(ConfigError, match=r"^bad\.yaml:2 node\.port: "):
        load_config("bad.yaml")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.yaml", None, "missing.yaml: cannot read: No such file or directory"),
        (".", None, ".: cannot read: Is a directory"),
        ("latin1.yaml", b"node: {host: \xe9}\n", "latin1.yaml:1 cannot read: not UTF-8 (byte 0xe9 at offset 13)"),
        ("latin1-line3.yaml", b"\xef\xbb\xbfnode:\n  port: 104\n  host: \xe9\n",
         "latin1-line3.yaml:3 cannot read: not UTF-8 (byte 0xe9 at offset 29)"),
        ("empty.yaml", b"", "empty.yaml:1 the file is empty (or only comments): expected a mapping"),
    ],
)
def test_cannot_read(name: str, content: bytes | None, message: str, _cwd: Path) -> None:
    if content is not None:
        (_cwd / name).write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(name)
    assert str(info.value) == message


def test_byte_order_mark_is_fine(_cwd: Path) -> None:
    (_cwd / "bom.yaml").write_bytes(b"\xef\xbb\xbfnode: {port: 104}\n")
    assert load_config("bom.yaml").node.port == 104


# -- Fuzz ------------------------------------------------------------------------

TOKENS = [
    ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!int ", "!!str ", "!x ", "? ", "|", ">", "'", '"',
    "#", "\t", "\n", "  ", "~", "yes", "no", "-1", "0", "0x_", "1e999", ".nan", ".inf", "<<: *a", "\x00", "\x85",
    "\u2028", "é", "\\", "%YAML 1.1\n", "---\n", "...", "@", "`", "99999999999999999999", "null", "''", "1:30",
    "2024-02-30", "!!binary x", "!!timestamp 2024-13-45", "!!float x", "!!set {a}", "&b [*b]", "AUG-GEN-DVD",
    "rle", "1" + "0" * 400, "action: store", "tls: {certificate: /dev/null, key: /dev/null}", "match:", "copies: 0",
]


def mutate(text: str, rng: random.Random) -> str:
    """One to three random edits: delete a span, insert a token, duplicate or swap lines."""
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        edit = rng.randrange(4)
        if edit == 0:
            text = text[:i] + text[i + rng.randint(1, 12):]
        elif edit == 1:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        else:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            if edit == 2:
                lines.insert(a, lines[b])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


def test_fuzz_only_config_errors_come_out() -> None:
    rng = random.Random(20240611)
    original = DEFAULT.read_text()
    outcomes = {"valid": 0, "syntax": 0, "value": 0}
    for _ in range(3000):
        text = mutate(original, rng)
        try:
            parse_config(text, source="c.yaml")
        except ConfigError as exc:
            message = str(exc)
            assert exc.problems and message == "; ".join(exc.problems), (text, message)
            for problem in exc.problems:  # each a line of its own, naming the file's line
                assert re.match(r"c\.yaml:[0-9]+ ", problem) and "\n" not in problem and len(problem) < 400, (text, problem)
            outcomes["syntax" if "YAML syntax error" in message else "value"] += 1
        except Exception as exc:  # noqa: BLE001 - this is what the test is for
            pytest.fail(f"{type(exc).__name__}: {exc} for {text!r}")
        else:
            outcomes["valid"] += 1
    # The mutations reach the validator, not only the YAML parser.
    assert min(outcomes.values()) > 100, outcomes


FULL = """\
node:
  ae_title: ARCHIVE
  host: 0.0.0.0
  port: 104
  data_dir: var
  allowed_calling_aets: CT1
  allowed_peers:
    CT2: 10.0.0.0/24
  extra_sop_classes: 1.2.3
  group: root
  workers: 2
  max_associations: 16
  min_free_mb: 0
  max_pdu: 4096
  tls:
    certificate: cert.pem
    key: key.pem
    ca: ca.pem
  identity:
    station_name: CDROBOT1
    manufacturer_model_name: Media Station
    device_serial_number: SN-0042
    department: Radiology
    institution_address: 1 Main Street, Springfield
burn:
  output: out
  study_stable_seconds: 0.5
  retention_hours: 0
routes:
  - match:
      called_aet: DVD
      calling_aet: CT1
      modality: CT
      sop_class: 1.2.840.10008.5.1.4.1.1.2
    action: burn
    profile: AUG-GEN-DVD
    compress: rle
    copies: 3
    group: patient
    label: X
    kind: backup
    output: o
    repair: true
import:
  inbox: in
  destination:
    ae_title: PACS
    host: h
    port: 11112
  watch: true
  mount_roots: /media
  drives: [/dev/sr0, /dev/sr1]
  settle_seconds: 5
  poll_seconds: 2
  eject: [eject, '{device}']
  calling_aet: READER
  coerce:
    issuer_of_patient_id: HOSPITAL
    patient_id_prefix: 'EXT-'
    patient_id_map:
      A1: B1
      '0123': X9
"""
AWKWARD = [
    "1" + "0" * 400, "1" + "0" * 5000, "-1", "0", "65536", "4096.5", "1e3", "1:30", ".inf", "-.inf", ".nan", "0x_", "0b_",
    "._", "yes", "~", "''", '"a\\0b"', '"\\u2028"', "é", "x" * 1000, "[]", "{}", "[[]]", "[~]", "[{a: 1}]", "{a: [1]}",
    "!!binary AA==", "!!binary ?", "!!timestamp 2024-01-01", "2024-02-30", "!!int 1.5", "!!float x", "!!null x",
    "!!bool maybe", "!!str 1", "!!set {a}", "!!omap [{a: 1}]", "!!pairs [x]", "!x y", "!x", "*undefined", "&a [*a]",
    "&b {k: *b}", "|\n      block", ">-", "? a", "- a",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_fuzz_every_value(value: str, _cwd: Path) -> None:
    """Each leaf of a full configuration, replaced by each awkward value: a Config or one ConfigError line."""
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (_cwd / name).write_text("-----BEGIN-----\n")
    assert parse_config(FULL, source="c.yaml").routes[0].compress == Compression("rle")
    lines = FULL.splitlines()
    for i, line in enumerate(lines):
        key, colon, old = line.partition(": ")
        if not colon or not old:
            continue
        text = "\n".join([*lines[:i], f"{key}: {value}", *lines[i + 1:]])
        try:
            parse_config(text, source="c.yaml")
        except ConfigError as exc:
            assert str(exc).startswith("c.yaml") and "\n" not in str(exc), (text, str(exc))
