"""``medianode serve``: the receivers, the scheduler, the builder and the deliverers, wired together.

Three kinds of loop, each in its own thread with its own index connection, so that none waits for
another: the service loop (scheduling, housekeeping, configuration reloads), one builder (one build at
a time: the process pool is the node's CPU and memory limit) and one deliverer per output (a drive, a
robot's hot folder, a USB mount point, a folder), each with its own queue, so that a job waiting for a
blank disc holds only its own output, and a route saved during a long burn reaches the receivers at once.

Start-up finishes what a crash left: temp files are removed, spool files that
never got indexed are indexed, jobs left under way go back to the queue and
their partial output is deleted. SIGTERM (or Ctrl-C) drains: the receivers
finish the C-STORE in flight; no new build or delivery starts; a copy being
written is finished; every other job goes back to the queue; a second Ctrl-C
forces. SIGHUP, or a change of the file, reloads the configuration; an invalid
new file is refused with a logged error and the running configuration kept.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from node import audit, filemodes, holds, jobs, media_requests, report, users
from node.config import Config, load_config
from node.console import process as console_process
from node.errors import ConfigError
from node.index import Index
from node.media.outputs import output_for
from node.receive import workers
from node.receive.instance import index_orphans
from node.receive.spool import Spool
from node.words import counted

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
        self.console: console_process.ConsoleProcess | None = None
        self._reload_asked = threading.Event()
        self._mtime = _mtime(config.source)
        self._started = time.time()
        self._interrupted_imports: list[dict[str, object]] = []

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT; return the exit status."""
        data_dir, group = self.config.node.data_dir, self.config.node.group
        filemodes.restrict(group)
        for folder in (data_dir, *self._folder_outputs()):
            filemodes.own(folder, group)
        index = Index(data_dir / "index.sqlite")
        try:
            self._recover(index)
            previous = self._capture_signals()  # before the port answers: a SIGHUP may follow at once
            watcher: threading.Thread | None = None
            catalogue = self._feed(index)
            started = False
            try:
                if self.config.console.enabled:
                    self.console = console_process.start(self.config)  # its start overlaps the receivers'
                self.receivers = workers.start_receivers(self.config)
                self._publish()
                logger.info("medianode serving %s on %s:%d (%d receiver processes), data in %s",
                            self.config.node.ae_title, self.config.node.host, self.config.node.port,
                            len(self.receivers), data_dir)
                if self.console is not None:
                    self.console.wait_ready()
                    logger.info("console at %s", self.console.url)
                    announce_first_start(index, self.config, self.console.url)
                self._audit("node-started")
                started = True
                if self.config.imports.watch:
                    from node.intake import ImportRunner  # the import side: loaded by a node that imports

                    # its own connection (one per thread); run() finishes interrupted imports, then watches
                    runner = ImportRunner(Index(data_dir / "index.sqlite"), lambda: self.config, stop=self.stop)
                    watcher = threading.Thread(target=runner.run, args=(self._interrupted_imports,),
                                               name="medianode-watcher", daemon=True)
                    watcher.start()
                self._loop(index)
            finally:
                if self.console is not None:
                    self.console.stop()
                workers.stop_receivers(self.receivers)
                (data_dir / report.SERVING_FILE).unlink(missing_ok=True)
                if watcher is not None:
                    watcher.join()  # an import in flight finishes; the next one waits for the next start
                    runner.index.close()
                if catalogue is not None:
                    self.stop.set()
                    catalogue.join()  # a drain in flight ends; what waits is pushed at the next start
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                if started:
                    self._audit("node-stopped")
        finally:
            index.close()
        logger.info("medianode stopped")
        return 0

    def _publish(self) -> None:
        """Tell ``status`` who listens: this process and its receivers."""
        report.publish_serving(self.config, [r.pid for r in self.receivers], self._started)

    def _feed(self, index: Index) -> threading.Thread | None:
        """Feed ``node.catalogue`` from the index's outbox, in a thread of its own; with none, queue nothing."""
        node = self.config.node
        queued = index.feed(node.station_name if node.catalogue else None)
        if node.catalogue is None:
            return None
        from node.catalogue import feeder  # psycopg: loaded only for a station with a catalogue

        if queued:
            logger.info("catalogue: %s of this station's history queued for it", counted(queued, "record"))
        return feeder.start(index.path, node, self.stop, started=self._started)

    def _audit(self, event: str, **fields: object) -> None:
        """An audit event of the service (Application Activity, Security Alert); an unwritable log is
        logged, and the node goes on."""
        node = self.config.node
        try:
            audit.append(self.config, event, ae_title=node.ae_title, host=node.host, port=node.port,
                         user=audit.user(), **fields)
        except OSError as exc:
            logger.error("Cannot write the audit log in %s: %s", node.data_dir, exc)

    def _recover(self, index: Index) -> None:
        spool = Spool(self.config.node.data_dir)
        spool.cleanup_tmp()
        # before the node answers anyone: an import started by the command line from then on is not interrupted
        self._interrupted_imports = index.interrupted_imports() if self.config.imports.watch else []
        indexed = index_orphans(spool, index, known=index.known_paths(), routes=self.config.routes)
        if indexed:
            logger.warning("start-up: indexed %s the index did not know", counted(indexed, "spooled instance"))
        recovered = index.quiet_from(time.time())
        if recovered:
            logger.info("start-up: %s still receiving %s a full study_stable_seconds from now",
                        counted(recovered, "study"), "waits" if recovered == 1 else "wait")
        requeued = index.requeue_interrupted()
        if requeued:
            logger.warning("start-up: %s %s interrupted and %s back to the queue",
                           f"job {requeued[0]}" if len(requeued) == 1 else f"jobs {', '.join(map(str, requeued))}",
                           *(("was", "goes") if len(requeued) == 1 else ("were", "go")))
        jobs.clean_partial_outputs(self._outputs())

    def _folder_outputs(self) -> list[Path]:
        """The folders of folder outputs: the node's, as its data (devices and hot folders are others')."""
        configured = [self.config.burn.output, *(r.output for r in self.config.routes if r.output)]
        return sorted({o for o in configured if isinstance(o, Path)})

    def _outputs(self) -> list[Path]:
        """Every folder a medium is built in: ``data_dir/burning``, and the folders and hot folders."""
        data_dir = self.config.node.data_dir
        configured = [self.config.burn.output, *(r.output for r in self.config.routes if r.output)]
        return sorted({data_dir / "burning", *(output_for(o).staging(data_dir) for o in configured)})

    def _loop(self, index: Index) -> None:
        """The service loop: scheduling, housekeeping and reloads, beside the builder and the deliverers."""
        deliveries = _Deliveries(index.path, lambda: self.config, self.stop)
        scheduled = threading.Event()
        builder = threading.Thread(target=_build, args=(index.path, lambda: self.config, deliveries, scheduled,
                                                        self.stop), name="medianode-builder")
        builder.start()
        try:
            self._serve_loop(index, scheduled)
        finally:
            self.stop.set()
            scheduled.set()
            builder.join()  # a build in progress finishes, and goes back to the queue
            deliveries.join()  # a copy being written finishes; the jobs waiting go back to the queue

    def _serve_loop(self, index: Index, scheduled: threading.Event) -> None:
        last_housekeeping = 0.0
        while not self.stop.is_set():
            pids = [r.pid for r in self.receivers]
            workers.supervise(self.receivers)
            if self.console is not None:
                self.console.supervise()
            if pids != [r.pid for r in self.receivers]:
                self._publish()
            now = time.time()
            if jobs.schedule(index, self.config, now=now):
                scheduled.set()
            if media_requests.schedule(index, self.config, now=now):
                scheduled.set()
            if now - last_housekeeping >= HOUSEKEEPING_S:
                jobs.clean_spool(index, self.config, now=now)
                holds.purge(index, self.config, now=now)
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
            self._audit("config-reloaded", source=str(source), ok=False, reason=str(exc))
            return
        if (new.node.port, new.node.host, new.node.data_dir) != (self.config.node.port, self.config.node.host,
                                                                  self.config.node.data_dir):
            logger.warning("node.host, node.port and node.data_dir change only at restart")
        self.config = new
        for receiver in self.receivers:
            receiver.reload()
        if self.console is not None:
            self.console.reload(new)
        logger.info("configuration reloaded from %s: %s", source, counted(len(new.routes), "route"))
        self._audit("config-reloaded", source=str(source), ok=True, reason="")

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


def _build(path: Path, config: Callable[[], Config], deliveries: _Deliveries, scheduled: threading.Event,
           stop: threading.Event) -> None:
    """The builder: one build at a time, from the index's queue; each built medium to its output's queue. With
    a shared spool, from the catalogue's (:mod:`node.catalogue.shared`), each built and delivered in turn."""
    index = Index(path)
    worker = jobs.Worker(index, config)
    try:
        if config().node.shared_spool:
            from node.catalogue import shared  # psycopg: loaded only for a station with a catalogue

            shared.SharedBuilder(index, config, stop, scheduled).run()
        while not stop.is_set():
            job = index.claim_job()
            if job is None:
                scheduled.wait(POLL_S)
                scheduled.clear()
                continue
            built = worker.build(job)
            if built is not None:
                deliveries.put(built)  # when the node is stopping, deliveries.join() puts it back
    finally:
        index.close()


class _Deliveries:
    """One delivery worker (a thread, with its queue and index connection) per output, started when the
    output's first job is built."""

    def __init__(self, path: Path, config: Callable[[], Config], stop: threading.Event) -> None:
        self.path, self.config, self.stop = path, config, stop
        self._queues: dict[str, queue.Queue[jobs.Built]] = {}
        self._threads: list[threading.Thread] = []

    def put(self, built: jobs.Built) -> None:
        name = built.output.queue
        if name not in self._queues:
            self._queues[name] = queue.Queue()
            thread = threading.Thread(target=self._deliver, args=(self._queues[name],),
                                      name=f"medianode-output {name}")
            self._threads.append(thread)
            thread.start()
        self._queues[name].put(built)

    def _deliver(self, waiting: queue.Queue[jobs.Built]) -> None:
        index = Index(self.path)
        worker = jobs.Worker(index, self.config)
        try:
            while not self.stop.is_set():
                try:
                    built = waiting.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if self.stop.is_set():
                    worker.put_back(built)
                else:
                    worker.deliver(built, self.stop)
        finally:
            index.close()

    def join(self) -> None:
        """Wait for every delivery worker; a job built after its worker stopped goes back to the queue."""
        for thread in self._threads:
            thread.join()
        left = [q.get() for q in self._queues.values() for _ in range(q.qsize())]
        if left:
            index = Index(self.path)
            try:
                for built in left:
                    jobs.Worker(index, self.config).put_back(built)
            finally:
                index.close()


#: Where the first start's sign-in link is written when ``serve`` has no terminal (readable by the node only).
FIRST_START_FILE = "first-sign-in.url"


def announce_first_start(index: Index, config: Config, url: str) -> None:
    """With no user yet, make the one-time link that makes the first admin, and show it to the person
    starting the node: on the terminal when ``serve`` has one, else in ``data_dir/first-sign-in.url``
    (mode 0600). Never in the log: the log is read by more people than the node's owner."""
    path = config.node.data_dir / FIRST_START_FILE
    secret = users.first_start_link(index, config)
    if secret is None:
        path.unlink(missing_ok=True)
        return
    link = f"{url}/first/{secret}"
    if sys.stderr.isatty():
        print(f"No user yet: open {link} within 15 minutes to make the first admin (once).", file=sys.stderr)
        return
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (link + "\n").encode())
    finally:
        os.close(fd)
    logger.info("no user yet: the one-time sign-in link for the first admin is in %s (valid 15 minutes)", path)


def serve(config_path: str | os.PathLike[str]) -> int:
    """Load the configuration and run the node until it is told to stop."""
    return Service(load_config(config_path)).run()


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path else None
    except OSError:
        return None
