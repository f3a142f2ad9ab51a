"""Jobs: long operations that run in the background, survive restarts, and are
watched and controlled over REST from any process.

A job type is a name (Orthanc's ``Type``, e.g. ``"Archive"``) and a function of a
:class:`JobContext`; plugins add theirs with ``register_job_types``. Jobs are rows of
the index: any process submits, lists, pauses or cancels them, and the process that
holds the "jobs" lease runs up to ``ConcurrentJobs`` at a time. When a runner dies its
lease expires; the next holder puts the jobs it left running back to pending and
resumes them from their last checkpoint. A job's writes are fenced by its owner, so a
runner that lost its lease (but lives) stops at its next progress report.

Cancel and pause of a running job are requests that the job sees the next time it
reports progress; a cancel wins over a pause asked before or after it. Job types
marked ``retry`` treat network failures as transient: the job waits in state "Retry"
and tries again with doubling delays (``JobRetryCount``, ``JobRetryDelay``), then fails
and stays visible, and can be resubmitted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, CanceledJob, InexistentItem, LanthornError, NetworkError
from .index.jobs import FAILURE, FINISHED, PAUSED, PENDING, RETRY, RUNNING, SUCCESS, JobRecord
from .lease import Lease
from .model import ChangeType
from .storage import new_uuid

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

LEASE = "jobs"
LEASE_SECONDS = 15.0
POLL_SECONDS = 0.5
#: Progress is written to the index at most this often (and always at the end).
PROGRESS_SECONDS = 0.5
MAX_RETRY_DELAY = 3600.0


@dataclass(frozen=True)
class JobType:
    """A kind of job: ``run`` does the work; ``retry`` makes network failures transient."""

    name: str
    run: Callable[[JobContext], None]
    retry: bool = False


class JobInterrupted(Exception):
    """Raised inside a job by :meth:`JobContext.progress` when it must stop now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "cancel", "pause" or "shutdown"


class JobContext:
    """What a running job sees: its parameters, where it got to, and how to report."""

    def __init__(self, engine: JobEngine, record: JobRecord) -> None:
        self.server = engine.server
        self.id = record.id
        self.parameters = record.parameters
        self.checkpoint = dict(record.checkpoint)
        self.content = dict(record.content)
        self._engine = engine
        self._saved_at = 0.0

    def progress(self, fraction: float, *, force: bool = False) -> None:
        """Record progress (0..1) with the current ``checkpoint`` and ``content``.

        Raises :class:`JobInterrupted` when the job was asked to stop: call it
        between units of work that can be resumed from the checkpoint.
        """
        if self._engine.stopping.is_set():
            raise JobInterrupted("shutdown")
        now = time.monotonic()
        if not force and now - self._saved_at < PROGRESS_SECONDS:
            return
        self._saved_at = now
        jobs = self.server.index.jobs
        if not jobs.update(self.id, run_by=self._engine.identity, expect=(RUNNING,),
                           progress=min(max(fraction, 0.0), 1.0),
                           checkpoint=self.checkpoint, content=self.content):
            raise JobInterrupted("lost")  # deleted, or taken over by another process
        record = jobs.get(self.id)
        if record is not None and record.request:
            raise JobInterrupted(record.request)

    def save_output(self, key: str, chunks: Iterable[bytes], *, media_type: str,
                    filename: str) -> None:
        """Keep a product of the job (an archive...) in the storage area, where every
        process can serve it as ``GET /jobs/{id}/{key}``."""
        uuid = new_uuid()
        size = 0

        def counted() -> Iterable[bytes]:
            nonlocal size
            for chunk in chunks:
                size += len(chunk)
                yield chunk

        self.server.storage.write(uuid, counted())
        record = self.server.index.jobs.get(self.id)
        outputs = dict(record.outputs) if record else {}
        outputs[key] = {"uuid": uuid, "size": size, "media_type": media_type,
                        "filename": filename}
        self.server.index.jobs.update(self.id, outputs=outputs)


class JobEngine:
    """Submits jobs from any process; runs them in the lease holder."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.identity = server.identity
        self._lease = Lease(server.index, LEASE, server.identity, LEASE_SECONDS)
        self.types: dict[str, JobType] = {}
        for batch in server.plugins.hook.register_job_types(server=server):
            for job_type in batch:
                self.types.setdefault(job_type.name, job_type)
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._running: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- any process --------------------------------------------------------------------

    def submit(self, job_type: str, parameters: dict[str, Any], *,
               content: dict[str, Any] | None = None, priority: int = 0) -> str:
        """Queue a job; its ID. The runner (perhaps another process) picks it up."""
        if job_type not in self.types:
            raise BadRequest(f'unknown job type "{job_type}"')
        job_id = str(uuidlib.uuid4())
        self.server.index.jobs.create(job_id, job_type, parameters, content or {}, priority)
        self._wake.set()
        self._signal(job_id, ChangeType.JobSubmitted)
        return job_id

    def cancel(self, job_id: str) -> None:
        if self._stop(job_id, "cancel", state=FAILURE, error_code=CanceledJob.orthanc_status,
                      error_details="", completed=time.time()):
            self._signal(job_id, ChangeType.JobFailure)

    def pause(self, job_id: str) -> None:
        self._stop(job_id, "pause", state=PAUSED)

    def _stop(self, job_id: str, request: str, **now: Any) -> bool:
        """Change a waiting job to ``now`` (True), or ask a running one for ``request``.

        Retried when the job changed state in between (a running job that stopped for a
        pause meanwhile is cancelled as a paused one). A finished job stays as it is, and
        a cancel already asked for is not replaced by a pause.
        """
        self._get(job_id)
        jobs = self.server.index.jobs
        while True:
            if jobs.update(job_id, expect=(PENDING, PAUSED, RETRY), **now):
                return True
            if jobs.update(job_id, expect=(RUNNING,), unless_request="cancel", request=request):
                return False
            record = self._get(job_id)
            if record.state in FINISHED or record.request == "cancel":
                return False

    def resume(self, job_id: str) -> None:
        self._get(job_id)
        if not self.server.index.jobs.update(job_id, expect=(PAUSED,), state=PENDING):
            raise BadRequest("only a paused job can be resumed")
        self._wake.set()

    def resubmit(self, job_id: str) -> None:
        """Start a failed job again from the beginning."""
        self._get(job_id)
        if not self.server.index.jobs.update(
                job_id, expect=(FAILURE,), state=PENDING, progress=0.0, checkpoint={},
                error_code=0, error_details="", request=None, attempts=0, completed=None,
                outputs={}):
            raise BadRequest("only a failed job can be resubmitted")
        self._wake.set()

    def delete(self, job_id: str) -> None:
        record = self._get(job_id)
        if record.state not in FINISHED:
            raise BadRequest("only a finished job can be deleted: cancel it first")
        self._forget([record])

    def delete_output(self, job_id: str, key: str) -> None:
        record = self._get(job_id)
        output = record.outputs.get(key)
        if output is None:
            raise InexistentItem(f'job {job_id} has no output "{key}"')
        outputs = {k: v for k, v in record.outputs.items() if k != key}
        self.server.index.jobs.update(job_id, outputs=outputs)
        self.server.storage.remove(output["uuid"])

    def _get(self, job_id: str) -> JobRecord:
        record = self.server.index.jobs.get(job_id)
        if record is None:
            raise InexistentItem(f"unknown job {job_id}")
        return record

    def _forget(self, records: list[JobRecord]) -> None:
        self.server.index.jobs.delete([r.id for r in records])
        for record in records:
            for output in record.outputs.values():
                self.server.storage.remove(output["uuid"])

    # -- the runner ---------------------------------------------------------------------

    def start(self, *, fresh: bool) -> None:
        """Run jobs; on a ``fresh`` start (no other server of this index alive) without
        ``SaveJobs``, forget the old ones first."""
        if fresh and not self.server.config["SaveJobs"]:
            self._forget(self.server.index.jobs.all())
        self._pool = ThreadPoolExecutor(self._concurrency(), thread_name_prefix="lanthorn-job")
        self._thread = threading.Thread(target=self._loop, name="lanthorn-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt running jobs at their next progress report; they resume later."""
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._lease.release()

    def wake(self) -> None:
        self._wake.set()

    def _concurrency(self) -> int:
        return int(self.server.config["ConcurrentJobs"]) or os.cpu_count() or 1

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if self._lease.held():
                    self.run_once()
            except Exception:
                log.exception("the job runner failed; retrying")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def run_once(self) -> None:
        """One round: requeue orphans and due retries, start what fits."""
        jobs = self.server.index.jobs
        jobs.requeue(self.identity, due_before=time.time())
        while len(self._running) < self._concurrency() and not self.stopping.is_set():
            record = jobs.claim_next(self.identity)
            if record is None:
                return
            with self._lock:
                self._running[record.id] = self._pool.submit(self._execute, record)

    def _execute(self, record: JobRecord) -> None:
        started = time.time()
        try:
            self._outcome(record, started)
        except Exception:
            log.exception("job %s could not record its outcome", record.id)
        finally:
            with self._lock:
                self._running.pop(record.id, None)
            self._wake.set()

    def _outcome(self, record: JobRecord, started: float) -> None:
        job_type = self.types.get(record.job_type)
        context = JobContext(self, record)
        try:
            if job_type is None:
                raise LanthornError(f'no plugin of this server runs jobs of type '
                                    f'"{record.job_type}"')
            job_type.run(context)
        except JobInterrupted as stop:
            self._interrupted(context, record, stop.reason, started)
            return
        except Exception as exc:  # a job's failure is its outcome, never the runner's
            self._failed(context, record, job_type, exc, started)
            return
        if self._finish(record, state=SUCCESS, progress=1.0, checkpoint=context.checkpoint,
                        content=context.content, completed=time.time(),
                        runtime=record.runtime + time.time() - started):
            log.info("job %s (%s) succeeded", record.id, record.job_type)

    def _finish(self, record: JobRecord, *, unless_request: str | None = None,
                **values: Any) -> bool:
        """Record how a run ended, unless another process took the job over meanwhile
        (or, quietly, when ``unless_request`` came in meanwhile)."""
        if not self.server.index.jobs.update(record.id, expect=(RUNNING,), run_by=self.identity,
                                             unless_request=unless_request, owner=None,
                                             request=None, **values):
            if unless_request is None:
                log.warning("job %s was taken over by another process; its outcome here is "
                            "dropped", record.id)
            return False
        if values["state"] in FINISHED:
            self._signal(record.id, ChangeType.JobSuccess if values["state"] == SUCCESS
                         else ChangeType.JobFailure)
            self._prune()
        return True

    def _signal(self, job_id: str, event: ChangeType) -> None:
        self.server.plugins.notify("on_job_event", server=self.server, job_id=job_id,
                                   event=event)

    def _interrupted(self, context: JobContext, record: JobRecord, reason: str,
                     started: float) -> None:
        common = {"checkpoint": context.checkpoint, "content": context.content,
                  "runtime": record.runtime + time.time() - started}
        # Paused by a user, or this process is stopping: resume later, unless a cancel
        # came in while it was stopping, which must not be lost.
        if reason != "cancel" and self._finish(
                record, state=PAUSED if reason == "pause" else PENDING,
                unless_request="cancel", **common):
            log.info("job %s stopped: %s", record.id, reason)
        elif self._finish(record, state=FAILURE, error_code=CanceledJob.orthanc_status,
                          completed=time.time(), **common):
            log.info("job %s stopped: cancel", record.id)

    def _failed(self, context: JobContext, record: JobRecord, job_type: JobType | None,
                exc: Exception, started: float) -> None:
        code = exc.orthanc_status if isinstance(exc, LanthornError) else -1
        common = {"checkpoint": context.checkpoint, "content": context.content,
                  "error_code": code, "error_details": str(exc),
                  "runtime": record.runtime + time.time() - started}
        retries = int(self.server.config["JobRetryCount"])
        if job_type and job_type.retry and isinstance(exc, NetworkError) \
                and record.attempts <= retries:
            delay = min(float(self.server.config["JobRetryDelay"]) * 2 ** (record.attempts - 1),
                        MAX_RETRY_DELAY)
            self._finish(record, state=RETRY, next_attempt=time.time() + delay, **common)
            log.warning("job %s failed (attempt %d of %d), retrying in %.1f s: %s", record.id,
                        record.attempts, retries + 1, delay, exc)
            return
        self._finish(record, state=FAILURE, completed=time.time(), **common)
        if isinstance(exc, LanthornError):
            log.warning("job %s (%s) failed: %s", record.id, record.job_type, exc)
        else:
            log.exception("job %s (%s) failed", record.id, record.job_type, exc_info=exc)

    def _prune(self) -> None:
        """Keep only the ``JobsHistorySize`` most recent finished jobs."""
        old = self.server.index.jobs.finished_beyond(int(self.server.config["JobsHistorySize"]))
        if old:
            self._forget(old)

