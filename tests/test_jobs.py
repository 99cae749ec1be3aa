"""The scheduler and the build worker on a real index and real files (no network)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from node.config import BurnConfig, Config, Match, NodeConfig, Route
from node.index import Index, Received
from node.jobs import Worker, clean_partial_outputs, clean_spool, schedule
from node.profiles import PROFILES
from node.receive.instance import again, digest_of_spooled
from node.read.medium import open_medium
from node.routing import STORE_ONLY, RouteSnapshot, recorded
from tests.conftest import ct_series


def make_config(tmp_path: Path, **route: object) -> Config:
    burn = Route(Match(called_aet=("BURN",)), "burn", **route)  # type: ignore[arg-type]
    return Config(node=NodeConfig(data_dir=tmp_path / "var"), burn=BurnConfig(output=tmp_path / "out",
                  study_stable_seconds=30), routes=(burn,))


def settings(route: Route, position: int = 0) -> str:
    """What an instance matching only ``route`` records."""
    return recorded([RouteSnapshot.of(route, position)])


def receive(index: Index, paths: list[Path], *, route: str, at: float) -> None:
    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        index.add_instance(Received(ds.SOPInstanceUID, ds.SOPClassUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                    ds.PatientID, str(ds.PatientName), ds.Modality, ds.file_meta.TransferSyntaxUID,
                                    str(p), p.stat().st_size, "CT1", "BURN", route, at))


def open_index(tmp_path: Path) -> Index:
    """The index in ``tmp_path/var``, make_config's data_dir."""
    (tmp_path / "var").mkdir(exist_ok=True)
    return Index(tmp_path / "var" / "index.sqlite")


def burn_one_study(config: Config, index: Index, files: list[Path]) -> None:
    """``files`` received on the first route at t = 1000, their job cut once they are quiet, and built."""
    receive(index, files, route=settings(config.routes[0]), at=1000.0)
    schedule(index, config, now=1031.0)
    Worker(index, lambda: config).run_pending()


def iso_files(iso: Path) -> list[str]:
    p = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/DICOM", "-type", "f"],
                       capture_output=True, text=True, check=True)
    return [line for line in p.stdout.splitlines() if line.startswith("'/DICOM")]


def test_a_quiet_study_becomes_one_volume(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    route = settings(config.routes[0])
    receive(index, ct_series(tmp_path / "spool", 5), route=route, at=1000.0)

    assert schedule(index, config, now=1020.0) == []  # 20 s quiet: not yet
    [job] = schedule(index, config, now=1031.0)
    assert schedule(index, config, now=1100.0) == []  # cut once
    assert Worker(index, lambda: config).run_pending() == 1

    assert index.job(job).state == "done"  # type: ignore[union-attr]
    [volume] = index.volumes()
    assert volume.label == f"MEDIANODE_{job:06d}" and volume.copies == 1
    assert len(iso_files(Path(volume.paths[0]))) == 5
    audit = [json.loads(line) for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines()]
    assert [a["event"] for a in audit] == ["study-received", "volume-burned"]


def test_late_arrival_supersedes_with_the_whole_study(tmp_path: Path) -> None:
    config = make_config(tmp_path, copies=2)
    index = open_index(tmp_path)
    route = settings(config.routes[0])
    first = ct_series(tmp_path / "spool", 3)
    study = dcmread(first[0]).StudyInstanceUID
    burn_one_study(config, index, first)

    late = ct_series(tmp_path / "late", 1, study_uid=study)  # a dose SR hours later, say
    receive(index, late, route=route, at=5000.0)
    [job] = schedule(index, config, now=5031.0)
    assert index.job(job).late  # type: ignore[union-attr]
    Worker(index, lambda: config).run_pending()

    old, new = index.volumes(study=study)
    assert old.superseded_by == new.label and new.superseded_by is None
    assert len(new.paths) == 2 and all(Path(p).exists() for p in new.paths)  # copies: 2
    assert len(iso_files(Path(new.paths[0]))) == 4  # the whole study, not just the late one


def test_a_study_recovered_at_start_up_waits_a_full_quiet_period_from_the_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    receive(index, ct_series(tmp_path / "spool", 2), route=settings(config.routes[0]), at=1000.0)
    assert index.quiet_from(5000.0) == 1  # the node restarts long after the last arrival
    assert schedule(index, config, now=5029.0) == []  # the sender that was cut off may resume
    assert len(schedule(index, config, now=5030.0)) == 1


def burned_then_let_go(tmp_path: Path) -> tuple[Config, Index, str, str]:
    """A study of 3 burned, then dropped from the spool by housekeeping: (config, index, route, study UID)."""
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    route = settings(config.routes[0])
    first = ct_series(tmp_path / "spool", 3)
    study = str(dcmread(first[0]).StudyInstanceUID)
    burn_one_study(config, index, first)
    assert clean_spool(index, config, now=1000.0 + 365 * 86400) == 3 and not any(p.exists() for p in first)
    return config, index, route, study


def test_a_late_arrival_after_the_spool_let_go_reads_the_rest_back_from_the_image(tmp_path: Path) -> None:
    config, index, route, study = burned_then_let_go(tmp_path)
    receive(index, ct_series(tmp_path / "late", 1, study_uid=study), route=route, at=5000.0)
    [job] = schedule(index, config, now=5031.0)
    Worker(index, lambda: config).run_pending()
    old, new = index.volumes(study=study)
    assert (old.superseded_by, new.addendum_of) == (new.label, None)
    assert len(iso_files(Path(new.paths[0]))) == 4  # read back from the earlier image: the whole study
    assert clean_spool(index, config, now=5032.0) == 3  # what was read back, once the job is done
    assert list((tmp_path / "var" / "readback" / str(job)).iterdir()) == []


def test_a_late_arrival_without_the_earlier_image_makes_an_addendum(tmp_path: Path) -> None:
    from tests.conftest import cli

    config, index, route, study = burned_then_let_go(tmp_path)
    [complete] = index.volumes(study=study)
    Path(complete.paths[0]).unlink()  # the disc was handed out, the image cleaned away
    receive(index, ct_series(tmp_path / "late", 1, study_uid=study), route=route, at=5000.0)
    schedule(index, config, now=5031.0)
    Worker(index, lambda: config).run_pending()
    old, addendum = index.volumes(study=study)
    assert (old.label, old.superseded_by, addendum.addendum_of) == (complete.label, None, complete.label)
    assert len(iso_files(Path(addendum.paths[0]))) == 1
    with open_medium(addendum.paths[0]) as medium, medium.open("README.TXT") as readme:
        assert f"volume 1 of 1, completes {complete.label}" in readme.read().decode()

    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nburn: {{output: {tmp_path / 'out'}}}\n")
    listed = cli("volumes", "--study", study, "--config", path)
    assert f"addendum, completes {complete.label}" in listed.out and complete.label in listed.out
    rows = json.loads(cli("volumes", "--study", study, "--config", path, "--json").out)
    assert [(r["label"], r["addendum_of"], r["superseded_by"]) for r in rows] == [
        (complete.label, None, None), (addendum.label, complete.label, None)]
    lost = cli("volumes", "reburn", complete.label, "--config", path)
    assert lost.code == 1 and "neither the spool nor an image holds any of the 3" in lost.err


def test_reburn_combines_what_it_can_and_names_what_it_cannot(tmp_path: Path) -> None:
    from tests.conftest import cli

    config = make_config(tmp_path)
    index = open_index(tmp_path)
    files = ct_series(tmp_path / "spool", 3)
    burn_one_study(config, index, files)
    [volume] = index.volumes()
    Path(volume.paths[0]).unlink()
    files[0].unlink()
    index.forget_files([str(files[0])])
    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nburn: {{output: {tmp_path / 'out'}}}\n")
    partial = cli("volumes", "reburn", volume.label, "--config", path)
    assert partial.code == 0, partial.err
    assert "1 instance is neither in the spool nor on an image and cannot be re-burned" in partial.out
    Worker(index, lambda: config).run_pending()
    old, new = index.volumes()
    assert old.superseded_by is None and new.addendum_of is None  # a partial re-burn replaces nothing
    assert len(iso_files(Path(new.paths[0]))) == 2


def two_studies_of_one_patient(tmp_path: Path) -> tuple[Config, Index, str]:
    """A route grouping by patient, and two studies of one patient received on it: (config, index, route)."""
    config = make_config(tmp_path, group="patient")
    index = open_index(tmp_path)
    route = settings(config.routes[0])
    receive(index, ct_series(tmp_path / "a", 2), route=route, at=1000.0)
    receive(index, ct_series(tmp_path / "b", 3), route=route, at=1001.0)
    return config, index, route


def test_patient_group_packs_studies_onto_one_volume(tmp_path: Path) -> None:
    config, index, route = two_studies_of_one_patient(tmp_path)
    receive(index, ct_series(tmp_path / "c", 1, patient_id="OTHER", name="ROE^RICHARD"), route=route, at=1002.0)
    assert len(schedule(index, config, now=1040.0)) == 2  # one per patient
    Worker(index, lambda: config).run_pending()
    sizes = sorted(len(v.studies) for v in index.volumes())
    assert sizes == [1, 2]


def test_store_route_makes_no_job(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    receive(index, ct_series(tmp_path / "s", 2), route=STORE_ONLY, at=1000.0)
    assert schedule(index, config, now=2000.0) == []
    assert index.receiving(since=0) == []  # settled, not waiting forever


def test_a_failed_job_says_why_and_can_be_retried(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    paths = ct_series(tmp_path / "spool", 2)
    receive(index, paths, route=settings(config.routes[0]), at=1000.0)
    [job] = schedule(index, config, now=1031.0)
    hidden = paths[0].rename(tmp_path / "hidden.dcm")
    Worker(index, lambda: config).run_pending()
    failed = index.job(job)
    assert failed is not None and failed.state == "failed"
    assert "no longer holds 1 of its 2" in (failed.error or "")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

    hidden.rename(paths[0])
    assert index.set_job_state(job, "pending", only_from=("failed",))
    Worker(index, lambda: config).run_pending()
    assert index.job(job).state == "done"  # type: ignore[union-attr]


def test_restart_requeues_and_cleans_partial_output(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (tmp_path / "out").mkdir()
    index = open_index(tmp_path)
    receive(index, ct_series(tmp_path / "spool", 2), route=settings(config.routes[0]), at=1000.0)
    [job] = schedule(index, config, now=1031.0)
    index.claim_job()  # the crash happens while it builds
    (tmp_path / "out" / f".MEDIANODE_{job:06d}.iso.part-123").write_bytes(b"half")
    assert index.requeue_interrupted() == [job]
    clean_partial_outputs([tmp_path / "out"])
    assert list((tmp_path / "out").iterdir()) == []
    Worker(index, lambda: config).run_pending()
    assert index.job(job).state == "done"  # type: ignore[union-attr]


def test_spool_is_cleaned_after_retention_but_not_before(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    paths = ct_series(tmp_path / "spool", 2)
    burn_one_study(config, index, paths)
    assert clean_spool(index, config, now=1000.0 + 3600) == 0  # retention is 24 h
    assert clean_spool(index, config, now=1000.0 + 25 * 3600) == 2
    assert not any(os.path.exists(p) for p in paths)
    assert len(index.volumes()) == 1  # the volume stays recorded


def test_the_spool_records_what_it_deletes_so_that_a_copy_sent_again_is_still_known(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    index = open_index(tmp_path)
    paths = ct_series(tmp_path / "spool", 2)
    burn_one_study(config, index, paths)
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    digests = [digest_of_spooled(str(p)) for p in paths]
    assert [index.copy_of(uid) for uid in uids] == [(str(p), "") for p in paths]  # received, never hashed
    assert clean_spool(index, config, now=1000.0 + 25 * 3600) == 2 and not any(p.exists() for p in paths)
    # the jobs' copies carry the digests now: the same data set again is not news, another one is
    assert [index.copy_of(uid) for uid in uids] == list(zip(map(str, paths), digests))
    assert again(index, uids[0], lambda: digests[0]) == (True, digests[0])
    assert again(index, uids[0], lambda: digests[1]) == (False, digests[1])
    assert again(index, "1.2.3.4", lambda: pytest.fail("an instance never seen is not hashed")) == (False, "")


def test_a_copy_that_cannot_be_read_is_the_same_as_nothing(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    [path] = ct_series(tmp_path / "spool", 1)
    receive(index, [path], route=settings(make_config(tmp_path).routes[0]), at=1000.0)
    uid, digest = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID), digest_of_spooled(str(path))
    path.unlink()  # gone, its digest never computed: nothing to compare with, so the data set is news
    assert again(index, uid, lambda: digest) == (False, digest)
    assert index.copy_of(uid) == (str(path), "")


def test_jobs_and_volumes_commands(tmp_path: Path) -> None:
    from node.config import load_config
    from tests.conftest import cli

    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nburn: {{output: {tmp_path / 'out'}}}\n"
                    "routes:\n  - {match: {called_aet: BURN}, action: burn}\n")
    config = load_config(path)
    index = open_index(tmp_path)
    paths = ct_series(tmp_path / "spool", 2)
    receive(index, paths, route=settings(config.routes[0]), at=1000.0)
    [job] = schedule(index, config, now=1031.0)
    Worker(index, lambda: config).run_pending()

    listed = json.loads(cli("jobs", "--config", path, "--json").out)
    assert [(j["id"], j["state"]) for j in listed] == [(job, "done")]
    refused = cli("jobs", "cancel", str(job), "--config", path)
    assert (refused.code, refused.err) == (1, f"medianode jobs: job {job} is done; cancel needs one of pending, failed\n")
    assert cli("jobs", "retry", "999", "--config", path).code == 2

    [volume] = json.loads(cli("volumes", "--config", path, "--json").out)
    queued = cli("volumes", "reburn", volume["label"], "--config", path)
    assert queued.code == 0, queued.err
    Worker(index, lambda: config).run_pending()
    first, second = index.volumes()
    assert first.superseded_by == second.label  # the re-burn replaces the lost disc

    for p in paths:
        p.unlink()
    read_back = cli("volumes", "reburn", second.label, "--config", path)  # the spool let go: from the image
    assert read_back.code == 0 and "cannot be re-burned" not in read_back.out, read_back.err
    Worker(index, lambda: config).run_pending()
    third = index.volumes()[-1]
    assert index.volumes(label=second.label)[0].superseded_by == third.label
    assert len(iso_files(Path(third.paths[0]))) == 2

    for v in index.volumes():
        for image in v.paths:
            Path(image).unlink(missing_ok=True)
    gone = cli("volumes", "reburn", third.label, "--config", path)
    assert gone.code == 1 and "neither the spool nor an image holds any of the 2" in gone.err


def test_a_patient_on_several_volumes_gets_volume_n_of_m(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CD that holds one of these small studies but not both (the packing's arithmetic, not a real medium).
    small = dataclasses.replace(PROFILES["STD-GEN-CD"], capacity_sectors=20)
    monkeypatch.setitem(PROFILES, "STD-GEN-CD", small)
    config, index, _ = two_studies_of_one_patient(tmp_path)
    jobs = schedule(index, config, now=1040.0)
    assert sorted(RouteSnapshot.from_json(index.job(j).route).volume for j in jobs) == [(1, 2), (2, 2)]  # type: ignore[union-attr]
