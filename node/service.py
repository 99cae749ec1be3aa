"""``medianode serve``: the receivers, the scheduler and the build worker, wired together.

Start-up finishes what a crash left: temp files are removed, spool files that
never got indexed are indexed, jobs left half-built go back to the queue and
their partial output is deleted. SIGTERM (or Ctrl-C) drains: the receivers
finish the C-STORE in flight, the worker finishes its build; a second Ctrl-C
forces. SIGHUP, or a change of the file, reloads the configuration; an invalid
new file is refused with a logged error and the running configuration kept.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from node import jobs
from node.config import Config, PublisherOutput, load_config
from node.errors import ConfigError
from node.intake import ImportRunner
from node.index import Index
from node.receive import workers
from node.receive.instance import index_orphans
from node.receive.spool import Spool

logger = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None
POLL_S = 1.0
HOUSEKEEPING_S = 60.0


class Service:
    """One running node."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.receivers: list[workers.Receiver] = []
        self._reload_asked = threading.Event()
        self._mtime = _mtime(config.source)

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT; return the exit status."""
        data_dir = self.config.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        index = Index(data_dir / "index.sqlite")
        try:
            self._recover(index)
            previous = self._capture_signals()  # before the port answers: a SIGHUP may follow at once
            watcher: threading.Thread | None = None
            try:
                self.receivers = workers.start_receivers(self.config)
                logger.info("medianode serving %s on %s:%d (%d receiver processes), data in %s",
                            self.config.node.ae_title, self.config.node.host, self.config.node.port,
                            len(self.receivers), data_dir)
                if self.config.imports.watch:
                    # its own connection (one per thread); run() finishes interrupted imports, then watches
                    runner = ImportRunner(Index(data_dir / "index.sqlite"), lambda: self.config, stop=self.stop)
                    watcher = threading.Thread(target=runner.run, name="medianode-watcher", daemon=True)
                    watcher.start()
                self._loop(index)
            finally:
                workers.stop_receivers(self.receivers)
                if watcher is not None:
                    watcher.join()  # an import in flight finishes; the next one waits for the next start
                    runner.index.close()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            index.close()
        logger.info("medianode stopped")
        return 0

    def _recover(self, index: Index) -> None:
        spool = Spool(self.config.node.data_dir)
        spool.cleanup_tmp()
        indexed = index_orphans(spool, index, known=index.known_paths())
        if indexed:
            logger.warning("start-up: indexed %d spooled instance(s) the index did not know", indexed)
        requeued = index.requeue_interrupted()
        if requeued:
            logger.warning("start-up: job(s) %s were interrupted and go back to the queue", requeued)
        jobs.clean_partial_outputs(self._outputs())

    def _outputs(self) -> list[Path]:
        outputs = [self.config.burn.output, *(r.output for r in self.config.routes if r.output)]
        return [self.config.node.data_dir / "burning",
                *(o if isinstance(o, Path) else o.hot_folder for o in outputs if isinstance(o, (Path, PublisherOutput)))]

    def _loop(self, index: Index) -> None:
        worker = jobs.Worker(index, lambda: self.config)
        last_housekeeping = 0.0
        while not self.stop.is_set():
            workers.supervise(self.receivers)
            now = time.time()
            jobs.schedule(index, self.config, now=now)
            worker.run_pending(self.stop)
            if now - last_housekeeping >= HOUSEKEEPING_S:
                jobs.clean_spool(index, self.config, now=now)
                last_housekeeping = now
            if self._reload_asked.is_set() or _mtime(self.config.source) != self._mtime:
                self._reload_asked.clear()
                self.reload()
            self.stop.wait(POLL_S)

    # -- signals and reloads ---------------------------------------------------

    def reload(self) -> None:
        """Load the configuration file again; keep the running one if the new one is invalid."""
        source = self.config.source
        self._mtime = _mtime(source)
        if source is None:
            return
        try:
            new = load_config(source)
        except ConfigError as exc:
            logger.error("configuration not reloaded, the running one is kept: %s", exc)
            return
        if (new.node.port, new.node.host, new.node.data_dir) != (self.config.node.port, self.config.node.host,
                                                                  self.config.node.data_dir):
            logger.warning("node.host, node.port and node.data_dir change only at restart")
        self.config = new
        for receiver in self.receivers:
            receiver.reload()
        logger.info("configuration reloaded from %s: %d route(s)", source, len(new.routes))

    def _capture_signals(self) -> dict[signal.Signals, _Handler]:
        """SIGTERM / SIGINT stop (a second SIGINT forces), SIGHUP reloads; returns the old handlers."""
        def on_exit(sig: int, frame: FrameType | None) -> None:
            if self.stop.is_set() and sig == signal.SIGINT:
                logger.warning("second interrupt: stopping at once; a build in progress is redone at start-up")
                workers.stop_receivers(self.receivers, force=True)
                os._exit(130)
            self.stop.set()

        def on_hup(sig: int, frame: FrameType | None) -> None:
            self._reload_asked.set()

        previous: dict[signal.Signals, _Handler] = {}
        for sig, handler in ((signal.SIGTERM, on_exit), (signal.SIGINT, on_exit), (signal.SIGHUP, on_hup)):
            previous[sig] = signal.signal(sig, handler)
        return previous


def serve(config_path: str | os.PathLike[str]) -> int:
    """Load the configuration and run the node until it is told to stop."""
    return Service(load_config(config_path)).run()


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path else None
    except OSError:
        return None
