"""The DICOMDIR read without pydicom agrees with pydicom, or leaves the file to it.

Every DICOMDIR of pydicom's test data, those DCMTK and our ``burn`` write, and
Hypothesis-mutated copies of a burned one: :func:`read_directory` either declines
(pydicom reads it, as before) or gives every value the survey reads exactly as
pydicom does, and pydicom warns about none of them. A survey of a plain medium
never imports pydicom.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.data import get_testdata_file

from node.read.check import check_medium
from node.read.directory import _RECORD, ReadDirectory, open_directory, read_directory
from node.read.header import CHARACTER_SETS
from tests.conftest import cli, ct_series
from tests.test_burn import extract
from tests.test_check import CONTENT, build

KEYWORDS = [keyword for keyword, _ in _RECORD.values()]
#: pydicom's DICOMDIRs, and whether they are plain (Explicit VR Little Endian, every length and value as it should be).
PYDICOM_DICOMDIRS = {
    "DICOMDIR": True,
    "DICOMDIR-nopatient": True,
    "DICOMDIR-reordered": True,
    "DICOMDIR-empty.dcm": True,
    "TINY_ALPHA/DICOMDIR": True,
    "DICOMDIR-implicit": False,
    "DICOMDIR-bigEnd": False,
    "DICOMDIR-nooffset": False,
}


def pydicom_dicomdir(name: str) -> Path:
    found = get_testdata_file("DICOMDIR", download=False)
    assert found, "pydicom's dicomdirtests are not installed"
    return Path(str(found)).parent / name


@pytest.fixture(scope="module")
def burned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A medium ``burn`` wrote, extracted: the ISO beside its folder."""
    root = tmp_path_factory.mktemp("burned")
    ct_series(root / "src", 3)
    assert cli("burn", root / "src", "--out", root / "cd.iso").code == 0
    return extract(root / "cd.iso", root / "cd")


def agrees(data: bytes) -> bool:
    """Whether :func:`read_directory` took ``data`` as plain; when it did, assert pydicom reads every value
    the survey reads alike, without a warning."""
    plain = read_directory(io.BytesIO(data), len(data))
    if plain is None:
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = ReadDirectory(dcmread(io.BytesIO(data)))
        assert (read.sop_class(), read.first()) == (plain.sop_class(), plain.first())
        theirs, ours = read.records(), plain.records()
        assert (theirs is None) == (ours is None)
        assert list(theirs or {}) == list(ours or {})
        for offset, record in (theirs or {}).items():
            mine = (ours or {})[offset]
            for keyword in KEYWORDS:
                assert (keyword in record) == (keyword in mine), keyword
                value, own = record.get(keyword), mine.get(keyword)
                if isinstance(own, list):  # pydicom's MultiValue
                    assert not isinstance(value, str) and list(value) == own, (keyword, value, own)
                else:  # a UID is a str, as is what it is compared with
                    assert value == own and str(value) == str(own) and isinstance(value, type(own)), (
                        keyword, value, own)
    assert [str(w.message) for w in caught] == []
    return True


@pytest.mark.parametrize("name", sorted(PYDICOM_DICOMDIRS))
def test_pydicom_dicomdirs(name: str) -> None:
    data = pydicom_dicomdir(name).read_bytes()
    assert agrees(data) == PYDICOM_DICOMDIRS[name]


def test_dcmtk_and_burned_dicomdirs_are_plain(tmp_path: Path, burned: Path) -> None:
    dcmtk = build(tmp_path / "cd", CONTENT)
    for path in (dcmtk / "DICOMDIR", burned / "DICOMDIR"):
        assert agrees(path.read_bytes()), path


def test_character_sets_are_pydicoms() -> None:
    assert CHARACTER_SETS == set(python_encoding)


def test_a_plain_survey_never_imports_pydicom(burned: Path) -> None:
    """In a fresh interpreter: importing the survey, and checking a burned medium as a folder and as an ISO."""
    code = (
        "import json, sys\n"
        "import node.read.check, node.read.header, node.read.medium\n"
        "loaded = 'pydicom' in sys.modules\n"
        "reports = [node.read.check.check_medium(p).to_dict() for p in sys.argv[1:]]\n"
        "print(json.dumps([loaded, 'pydicom' in sys.modules, reports]))\n"
    )
    iso = burned.parent / "cd.iso"
    done = subprocess.run([sys.executable, "-c", code, str(burned), str(iso)], capture_output=True, text=True,
                          check=True, timeout=120)
    on_import, after_check, reports = json.loads(done.stdout)
    assert (on_import, after_check) == (False, False)
    assert [(r["ok"], r["instances"], r["problems"]) for r in reports] == [(True, 3, [])] * 2


def test_a_declined_dicomdir_is_read_by_pydicom_to_the_same_report(tmp_path: Path) -> None:
    """pydicom's file set twice: with its plain DICOMDIR, and with the same records in Implicit VR, which
    pydicom reads; the reports are identical."""
    source = pydicom_dicomdir("DICOMDIR").parent
    implicit = (source / "DICOMDIR-implicit").read_bytes()
    assert isinstance(open_directory(io.BytesIO(implicit), len(implicit)), ReadDirectory)
    plain, declined = (Path(shutil.copytree(source, tmp_path / name)) for name in ("plain", "declined"))
    (declined / "DICOMDIR").write_bytes(implicit)
    report = check_medium(plain).to_dict()
    assert report == check_medium(declined).to_dict()
    assert report["instances"] == 81  # 31, and 50 under a sub-folder DICOMDIR


#: Bytes a value or a length may be turned into: padding, separators, cases, and the extremes.
_BYTES = st.sampled_from([b" ", b"\\", b"\0", b"a", b"A", b"1", b".", b"_", b"\xff", b"\x7f", b"\x01"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_burned_dicomdirs(burned: Path, data: st.DataObject) -> None:
    """Bytes overwritten anywhere, or the file cut short: the reader declines or agrees; it never raises."""
    original = (burned / "DICOMDIR").read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at:at + 1] = data.draw(_BYTES | st.binary(min_size=1, max_size=1))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(mutated))))
    mutated = mutated[:cut] if cut is not None else mutated
    agrees(bytes(mutated))  # pydicom raising on what was taken as plain fails the test too
