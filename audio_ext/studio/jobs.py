"""The studio's job queue: one worker thread runs generation and projection jobs in order.

Generation is CPU-bound and uses every core through torch, so one job at a time is as fast as it
gets on a small machine; the page polls a job for its progress and can cancel it. A job function
gets a :class:`JobContext`; calling ``ctx.progress`` between units of work (clips, projection steps)
is where a cancel takes effect (:class:`JobCancelled`). Every change bumps the job's ``version``;
a request may wait for the next one (long polling), so a clip reaches the page as soon as it exists. A job that fails keeps its one-line message;
the worker itself never stops on a job's error.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional

from audio_ext.studio.sessions import new_token

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
#: Finished jobs kept for the page to read, per queue (oldest dropped first).
KEEP_FINISHED = 500


class JobCancelled(Exception):
    """Raised inside a job at its next progress call after a cancel."""


class JobError(Exception):
    """A job's expected failure (bad input found late, decoding error): the message is shown as it is."""


class Job:
    """One request's work: state, progress ``done``/``total``, the clips it made and its result."""

    def __init__(self, session_id: str, kind: str, fn: Callable, total: int = 1):
        self.id = new_token()
        self.session_id = session_id
        self.kind = kind
        self.fn = fn
        self.state = QUEUED
        self.done, self.total = 0, max(int(total), 1)
        self.message = "waiting"
        self.error: Optional[str] = None
        self.clips: List[dict] = []
        self.result: dict = {}
        self.cancel_event = threading.Event()
        self.created = time.monotonic()
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.version = 0                       # bumped on every change, so a page can wait for the next one
        self.lock = threading.Condition()

    def changed(self) -> None:
        """Call with ``lock`` held after a change: wakes the requests waiting in :meth:`wait`."""
        self.version += 1
        self.lock.notify_all()

    def wait(self, after: int, timeout: float) -> None:
        """Block until the job changed since version ``after`` (or ``timeout`` seconds passed)."""
        with self.lock:
            self.lock.wait_for(lambda: self.version > after, timeout)

    def public(self) -> dict:
        with self.lock:
            return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                    "version": self.version,
                    "message": self.message, "error": self.error, "clips": list(self.clips),
                    "result": dict(self.result)}


class JobContext:
    """What a running job may do: report progress (and stop there when cancelled), publish clips."""

    def __init__(self, job: Job):
        self.job = job

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_event.is_set()

    def progress(self, done: int, total: Optional[int] = None, message: Optional[str] = None) -> None:
        with self.job.lock:
            self.job.done = int(done)
            if total is not None:
                self.job.total = max(int(total), 1)
            if message is not None:
                self.job.message = message
            self.job.changed()
        if self.cancelled:
            raise JobCancelled()

    def add_clip(self, clip: dict) -> None:
        with self.job.lock:
            self.job.clips.append(clip)
            self.job.changed()


class JobQueue:
    """FIFO of jobs served by one daemon worker thread; :meth:`stop` cancels everything and joins it."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self._jobs: Dict[str, Job] = {}
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="studio-jobs", daemon=True)
        self._worker.start()

    def submit(self, session_id: str, kind: str, fn: Callable[[JobContext], dict], total: int = 1) -> Job:
        job = Job(session_id, kind, fn, total)
        with self._lock:
            self._jobs[job.id] = job
            self._trim()
        self._queue.put(job)
        return job

    def get(self, job_id: str, session_id: str) -> Optional[Job]:
        """The job, when it belongs to ``session_id`` (another session's job does not exist for it)."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.session_id == session_id else None

    def cancel(self, job: Job) -> None:
        job.cancel_event.set()
        with job.lock:
            if job.state == QUEUED:
                job.state, job.message = CANCELLED, "cancelled before it started"
            job.changed()

    def cancel_session(self, session_id: str) -> None:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.session_id == session_id]
        for j in jobs:
            self.cancel(j)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for j in jobs:
            self.cancel(j)
        self._queue.put(None)
        self._worker.join(timeout)

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in (DONE, FAILED, CANCELLED)]
        for j in sorted(finished, key=lambda j: j.created)[:max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[j.id]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with job.lock:
                if job.state != QUEUED:
                    continue
                job.state, job.message, job.started = RUNNING, "running", time.monotonic()
                job.changed()
            try:
                result = job.fn(JobContext(job)) or {}
                state, error, message = DONE, None, "done"
            except JobCancelled:
                result, state, error, message = {}, CANCELLED, None, "cancelled"
            except JobError as e:
                result, state, error, message = {}, FAILED, str(e), "failed"
            except Exception as e:  # a bug must not take the worker down; the page shows it, the log has the trace
                self.log(f"job {job.kind} failed:\n{traceback.format_exc()}")
                result, state, error, message = {}, FAILED, f"{type(e).__name__}: {e}".splitlines()[0], "failed"
            with job.lock:
                job.result, job.state, job.error, job.message = result, state, error, message
                job.finished = time.monotonic()
                if state == DONE:
                    job.done = job.total
                job.changed()
