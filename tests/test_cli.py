"""What every command shares: a reader that stops reading early ends it quietly, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from node.cli import EXIT_CLOSED_OUTPUT, _reader_gone
from node.index import Index


def test_status_into_a_pipe_closed_before_it_writes(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    Index(tmp_path / "var" / "index.sqlite").close()
    (tmp_path / "node.yaml").write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command says anything
    try:
        done = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(tmp_path / "node.yaml"),
                               "--json"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (EXIT_CLOSED_OUTPUT, "")


def test_a_long_output_read_in_part_as_head_c_10_reads_it() -> None:
    """``medianode conformance | head -c 10``: quiet whatever the timing.

    Whether the command still has something to write when the reader goes
    depends on the kernel (it may take the blocked write in part and report no
    error): the status is then 0, else :data:`EXIT_CLOSED_OUTPUT`; never a traceback.
    """
    with subprocess.Popen([sys.executable, "-m", "node", "conformance"], stdout=subprocess.PIPE, bufsize=0,
                          stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.read(10) == b"# medianod"
        child.stdout.close()
        err = child.stderr.read().decode()
        assert child.wait(timeout=120) in (0, EXIT_CLOSED_OUTPUT)
    assert err == ""


def test_a_pipe_is_seen_closed_only_once_its_reader_is_gone() -> None:
    read, write = os.pipe()
    with open(write, "w") as stream:
        assert not _reader_gone(stream)
        os.close(read)
        assert _reader_gone(stream)
