"""Study-level routing: what each instance records, what a study is burned by, whatever the order."""

from __future__ import annotations

import itertools
import json
import signal
from pathlib import Path

import pytest
from pydicom import dcmread

from node.config import Match, Route
from node.index import Index
from node.routing import RouteSnapshot, decide, record, snapshots
from node.syntaxes import Compression
from tests.conftest import cli, ct_series, need
from tests.test_serve import Node, storescu

CT_DVD = Route(Match(modality=("CT",)), "burn", profile="STD-GEN-DVD-JPEG", where="r.yaml:2")
BURN_CD = Route(Match(called_aet=("BURN",)), "burn", profile="STD-GEN-CD", where="r.yaml:3")
STORE_SR = Route(Match(modality=("SR",)), "store", where="r.yaml:4")
REJECT_X = Route(Match(calling_aet=("X",)), "reject", where="r.yaml:5")


def recorded(routes: list[Route], modality: str, *, called: str = "BURN", calling: str = "CT1") -> list[int]:
    refused, text = record(routes, called_aet=called, calling_aet=calling, modality=modality, sop_class="1.2")
    assert refused is None
    return [s.position for s in snapshots(text)]


def test_an_instance_records_every_burn_route_it_matches_until_a_store() -> None:
    assert recorded([CT_DVD, BURN_CD], "CT") == [0, 1]
    assert recorded([CT_DVD, BURN_CD], "SR") == [1]
    assert recorded([CT_DVD, BURN_CD], "SR", called="OTHER") == []
    assert recorded([STORE_SR, BURN_CD], "SR") == []  # the store ends the trying
    assert recorded([BURN_CD, STORE_SR], "SR") == [0]


def test_a_matching_reject_refuses_the_instance() -> None:
    refused, text = record([BURN_CD, REJECT_X], called_aet="BURN", calling_aet="X", modality="CT", sop_class="1.2")
    assert refused is REJECT_X and snapshots(text) == []


@pytest.mark.parametrize("also", [False, True])
def test_the_study_takes_the_first_burn_route_any_instance_matched_whatever_the_order(also: bool) -> None:
    routes = [CT_DVD, Route(Match(called_aet=("BURN",)), "burn", also=also)]
    ct = record(routes, called_aet="BURN", calling_aet="CT1", modality="CT", sop_class="1.2")[1]
    sr = record(routes, called_aet="BURN", calling_aet="CT1", modality="SR", sop_class="1.2")[1]
    pr = record(routes, called_aet="BURN", calling_aet="CT1", modality="PR", sop_class="1.2")[1]
    for order in itertools.permutations([ct, sr, pr]):
        decided = [s.profile for s in decide(order)]
        assert decided == (["STD-GEN-DVD-JPEG", "STD-GEN-CD"] if also else ["STD-GEN-DVD-JPEG"])
    assert [s.profile for s in decide([sr, pr])] == ["STD-GEN-CD"]
    assert decide(["[]", "[]"]) == []


def test_a_snapshot_reads_back_as_it_was_written() -> None:
    snapshot = RouteSnapshot.of(Route(Match(), "burn", also=True, compress=Compression("j2k-lossy", psnr=45.0),
                                      compress_by_modality=(("MG", Compression()), ("US", Compression("jpeg-baseline", quality=80))),
                                      output=Path("/out"), viewer=Path("/viewer"), label="X"), 3)
    assert RouteSnapshot.from_json(snapshot.to_json()) == snapshot
    legacy = '{"action": "burn", "profile": "STD-GEN-DVD", "copies": 2, "output": null}'  # an earlier job
    assert (RouteSnapshot.from_json(legacy).profile, RouteSnapshot.from_json(legacy).copies) == ("STD-GEN-DVD", 2)
    assert snapshots('{"action": "store"}') == []


# -- end to end: real storescu, a running node ------------------------------------------------------

ROUTES = ("routes:\n  - {{match: {{modality: CT}}, action: burn, profile: STD-GEN-DVD-JPEG}}\n"
          "  - {{match: {{called_aet: BURN}}, action: burn, profile: STD-GEN-CD{also}}}\n")
ORDERS = list(itertools.permutations(["ct", "sr", "pr"]))


def _studies(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """One study per order: a CT series, its dose report (modality SR) and a presentation state (PR)."""
    studies = {}
    for n, order in enumerate(ORDERS):
        uid = f"1.2.826.0.1.3680043.10.1047.{n + 1}"
        parts = {"ct": ct_series(folder / f"{n}ct", 3, study_uid=uid, patient_id=f"P{n}"),
                 "sr": ct_series(folder / f"{n}sr", 1, study_uid=uid, patient_id=f"P{n}", Modality="SR"),
                 "pr": ct_series(folder / f"{n}pr", 1, study_uid=uid, patient_id=f"P{n}", Modality="PR")}
        studies[uid] = {part: parts[part] for part in order}
    return studies


def _final(index: Index, study: str) -> list[tuple[str, int]]:
    """(profile, instances) of the volumes of ``study`` no later volume superseded."""
    found = []
    for v in index.volumes(study=study):
        job = index.job(v.job_id)
        if v.superseded_by is None and job is not None:
            found.append((RouteSnapshot.from_json(job.route).profile, len(index.job_files(job.id))))
    return sorted(found)


@pytest.mark.parametrize("also", [False, True], ids=["first-burn-route", "also"])
def test_every_order_of_arrival_makes_the_same_discs(also: bool, tmp_path: Path) -> None:
    need("echoscu", "storescu", "xorriso")
    studies = _studies(tmp_path / "src")
    node = Node(tmp_path, stable=4, routes=ROUTES.format(also=", also: true" if also else ""))
    node.start()
    try:
        for parts in studies.values():
            for files in parts.values():  # each part its own association, in this study's order
                sent = storescu(node, files)
                assert sent.returncode == 0, sent.stderr
        want = sorted([("STD-GEN-CD", 5)] * also + [("STD-GEN-DVD-JPEG", 5)])
        index = Index(node.data / "index.sqlite")
        try:
            node.wait_for(lambda: all(_final(index, uid) == want for uid in studies), timeout=300)
            profiles = {RouteSnapshot.from_json(j.route).profile for j in index.jobs()}
            assert profiles == {p for p, _ in want}  # not even a partial volume of another route
            for uid, parts in studies.items():
                burned = {u for v in index.volumes(study=uid) for u, _, _ in index.job_files(v.job_id)}
                assert burned == {dcmread(f).SOPInstanceUID for files in parts.values() for f in files}
        finally:
            index.close()
        assert node.stop() == 0
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.stop(signal.SIGKILL)


# -- routes explain, config check --------------------------------------------------------------------

EXPLAIN_CONFIG = ("routes:\n"
                  "  - {match: {modality: CT}, action: burn, profile: STD-GEN-DVD-JPEG}\n"
                  "  - {match: {modality: KO}, action: store}\n"
                  "  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-CD, copies: 2}\n")


def _config(tmp_path: Path, text: str = EXPLAIN_CONFIG) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nburn: {{output: {tmp_path / 'out'}}}\n" + text)
    return path


def test_routes_explain_says_which_rule_matched_and_why_the_earlier_did_not(tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.10.1047.99"
    ct = ct_series(tmp_path / "ct", 2, study_uid=uid)
    sr = ct_series(tmp_path / "sr", 1, study_uid=uid, Modality="SR")
    config = _config(tmp_path)
    shown = cli("routes", "explain", tmp_path / "sr", tmp_path / "ct", "--config", config, "--called-aet", "BURN")
    assert shown.code == 0, shown.err
    assert f"{sr[0]}: SR" in shown.out
    assert "routes[0] burn {modality: CT} (" in shown.out and ": did not match: modality SR is not CT" in shown.out
    assert "routes[1] store {modality: KO}" in shown.out
    assert f"study {uid} (3 instances): 1 job" in shown.out
    assert "job by routes[0]: STD-GEN-DVD-JPEG, compress none, 1 copy to burn.output" in shown.out

    e = json.loads(cli("routes", "explain", *ct, *sr, "--config", config, "--called-aet", "BURN", "--json").out)
    assert [i["recorded"] for i in e["instances"]] == [[0, 2], [0, 2], [2]]
    assert [r["outcome"] for r in e["instances"][2]["rules"]] == ["did not match", "did not match", "matched"]
    assert e["instances"][2]["rules"][0]["why"] == "modality SR is not CT"
    [study] = e["studies"]
    assert [(j["route"], j["profile"], j["copies"]) for j in study["jobs"]] == [(0, "STD-GEN-DVD-JPEG", 1)]


def test_routes_explain_takes_the_ae_titles_from_the_file_meta(tmp_path: Path) -> None:
    [path] = ct_series(tmp_path / "sr", 1, Modality="SR")
    ds = dcmread(path)
    ds.file_meta.ReceivingApplicationEntityTitle = "BURN"
    ds.file_meta.SendingApplicationEntityTitle = "MODALITY1"
    ds.save_as(path, enforce_file_format=True)
    e = json.loads(cli("routes", "explain", path, "--config", _config(tmp_path), "--called-aet", "X", "--json").out)
    [inst] = e["instances"]
    assert (inst["called_aet"], inst["calling_aet"], inst["outcome"]) == ("BURN", "MODALITY1", "burn")


def test_routes_explain_a_study_of_the_index(tmp_path: Path) -> None:
    from tests.test_jobs import receive

    config = _config(tmp_path)
    (tmp_path / "var").mkdir()
    index = Index(tmp_path / "var" / "index.sqlite")
    try:
        files = ct_series(tmp_path / "s", 2, Modality="KO")
        receive(index, files, route="[]", at=1000.0)  # called BURN, calling CT1
    finally:
        index.close()
    study = dcmread(files[0]).StudyInstanceUID
    shown = cli("routes", "explain", "--study", study, "--config", config)
    assert shown.code == 0, shown.err
    assert "routes[1] store {modality: KO}" in shown.out and ": matched" in shown.out
    assert "routes[2] burn {called_aet: BURN} (" in shown.out and ": not tried" in shown.out
    assert f"study {study} (2 instances): stored only, no job" in shown.out
    assert cli("routes", "explain", "--study", "1.2.3", "--config", config).code == 2
    assert cli("routes", "explain", "--config", config).code == 2


def test_config_check_warns_of_routes_no_instance_can_reach(tmp_path: Path) -> None:
    config = _config(tmp_path, "routes:\n"
                                "  - {match: {called_aet: BURN}, action: burn}\n"
                                "  - {match: {called_aet: BURN, modality: CT}, action: burn, profile: STD-GEN-DVD-JPEG}\n"
                                "  - {match: {called_aet: BURN, modality: MR}, action: burn, also: true}\n"
                                "  - {match: {modality: KO}, action: store}\n"
                                "  - {match: {modality: KO, calling_aet: X}, action: reject}\n")
    checked = cli("config", "check", config)
    assert checked.code == 0
    assert checked.err.splitlines() == [
        f"{config}:5 routes[1]: warning: no instance can reach this route: every study it would burn is burned by "
        f"routes[0] ({config}:4) instead (add also: true to burn it by both)",
        f"{config}:8 routes[4]: warning: no instance can reach this route: every instance it matches is stored by "
        f"routes[3] ({config}:7) first",
    ]
    assert cli("config", "check", _config(tmp_path)).err == ""
