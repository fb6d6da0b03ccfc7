"""The job table: submitted jobs (Ray's job API), their states and their rows in storage.

Owns the JobInfo records by submission id, the moves between Ray's job states, and
their persistence in the head's storage (one JSON row per job, and a finished job's
log text): a head started again on SQLite or Redis finds them. Pure: no processes,
no files; the supervisor (node/job_supervisor.py) runs the drivers and tells the
table what happened, the dashboard's jobs_api reads it.

    submit ──▶ PENDING ──started(pid)──▶ RUNNING ──exited(0)──▶ SUCCEEDED
                  │                         ├──exited(n)──▶ FAILED (exit code, log tail)
                  └──stop / start failed──▶ └──stop──▶ STOPPED
    head restarted: PENDING / RUNNING rows ──▶ FAILED, DriverLost(pid) for the supervisor
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from ..job_submission.common import JobErrorType, JobInfo, JobStatus, default_message
from ..transitions import transition
from .storage import HeadStorage

PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = (
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.STOPPED,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
)
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    PENDING: frozenset({RUNNING, FAILED, STOPPED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, STOPPED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    STOPPED: frozenset(),
}
TABLE = "job_submissions"
LOGS_TABLE = "job_logs"
MAX_SAVED_LOG_BYTES = 8 << 20  # a finished job's log kept in storage: its last 8 MiB
LOG_TAIL_CHARS = 20_000  # Ray's: the failure message shows at most this much log
LOG_TAIL_LINES = 10


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class JobRecord:
    """A job: Ray's JobInfo plus what the supervisor needs (driver pid, stop asked)."""

    submission_id: str
    info: JobInfo
    driver_pid: int = 0  # also its process group (start_new_session)
    stop_requested: bool = False

    @property
    def state(self) -> JobStatus:  # transitions.Record's name
        return self.info.status

    @state.setter
    def state(self, new: JobStatus) -> None:
        self.info.status = new

    def row(self) -> bytes:
        return json.dumps(
            {
                "submission_id": self.submission_id,
                "info": self.info.to_json(),
                "driver_pid": self.driver_pid,
                "stop_requested": self.stop_requested,
            }
        ).encode()

    @classmethod
    def from_row(cls, blob: bytes) -> JobRecord:
        data = json.loads(blob)
        return cls(
            data["submission_id"],
            JobInfo.from_json(data["info"]),
            int(data.get("driver_pid", 0)),
            bool(data.get("stop_requested", False)),
        )


@dataclass(frozen=True)
class DriverLost:
    """Action: a job the old head ran is FAILED now; end what is left of its driver's
    process group (pid 0: it had none yet) and keep what it wrote (the head restarted)."""

    submission_id: str
    pid: int


def log_tail(text: str) -> str:
    """The last LOG_TAIL_LINES lines, at most LOG_TAIL_CHARS characters (Ray's tail)."""
    lines = text.splitlines(keepends=True)[-LOG_TAIL_LINES:]
    return "".join(lines)[-LOG_TAIL_CHARS:]


class JobTable:
    """The submitted jobs; every change is written to `storage` before it returns."""

    def __init__(self, storage: HeadStorage) -> None:
        self.storage = storage
        self.jobs: dict[str, JobRecord] = {}

    # ------------------------------------------------------------------ storage
    def load(self) -> list[DriverLost]:
        """Read the rows back (a head started again). A job that was PENDING or RUNNING
        lost its supervisor with the old head: it is FAILED now, and its driver, if it
        still runs, is to be killed (the returned actions)."""
        actions = []
        for blob in self.storage.scan(TABLE).values():
            rec = JobRecord.from_row(blob)
            self.jobs[rec.submission_id] = rec
            if rec.info.status.is_terminal():
                continue
            actions.append(DriverLost(rec.submission_id, rec.driver_pid))
            was = rec.info.status
            self._move(
                rec,
                FAILED,
                message=(
                    f"Job {rec.submission_id} was {was} when the head stopped; the new head "
                    "cannot follow its driver, so it was ended. Submit it again."
                ),
                error_type=JobErrorType.JOB_SUPERVISOR_ACTOR_DIED,
            )
        return actions

    def _save(self, rec: JobRecord) -> None:
        self.storage.put(TABLE, rec.submission_id, rec.row())

    def _move(
        self,
        rec: JobRecord,
        new: JobStatus,
        *,
        message: str | None = None,
        error_type: JobErrorType | None = None,
        exit_code: int | None = None,
    ) -> None:
        transition(rec, new, JOB_TRANSITIONS, cause=message or "", who=rec.submission_id.encode())
        rec.info.message = message or default_message(rec.info)
        rec.info.error_type = error_type
        if exit_code is not None:
            rec.info.driver_exit_code = exit_code
        if new.is_terminal():
            rec.info.end_time = now_ms()
        self._save(rec)

    # ------------------------------------------------------------------- events
    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        *,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        resources: dict[str, Any] | None = None,
    ) -> JobRecord:
        """A new PENDING job; ValueError (Ray's words) if the id was used before."""
        if submission_id in self.jobs:
            raise ValueError(
                f"Job with submission_id {submission_id} already exists. "
                "Please use a different submission_id."
            )
        info = JobInfo(
            status=PENDING,
            entrypoint=entrypoint,
            start_time=now_ms(),
            metadata=metadata,
            runtime_env=runtime_env,
            **(resources or {}),  # entrypoint_num_cpus, ... as they were asked
        )
        rec = JobRecord(submission_id, info)
        self.jobs[submission_id] = rec
        self._save(rec)
        return rec

    def started(self, submission_id: str, pid: int, node_id: str = "") -> None:
        rec = self.jobs[submission_id]
        rec.driver_pid = pid
        rec.info.driver_node_id = node_id or None
        self._move(rec, RUNNING)

    def start_failed(
        self,
        submission_id: str,
        message: str,
        setup: bool = False,
        kind: JobErrorType = JobErrorType.JOB_ENTRYPOINT_COMMAND_START_ERROR,
    ) -> None:
        if setup:
            kind = JobErrorType.RUNTIME_ENV_SETUP_FAILURE
        self._move(self.jobs[submission_id], FAILED, message=message, error_type=kind)

    def exited(self, submission_id: str, code: int, logs: str) -> None:
        """The driver exited with `code` (negative: killed by that signal)."""
        rec = self.jobs[submission_id]
        if rec.stop_requested:
            self._move(rec, STOPPED, exit_code=code)
        elif code == 0:
            self._move(rec, SUCCEEDED, exit_code=0)
        else:
            tail = log_tail(logs)
            if tail:
                message = (
                    f"Job entrypoint command failed with exit code {code}, "
                    "last available logs (truncated to 20,000 chars):\n" + tail
                )
            else:
                message = f"Job entrypoint command failed with exit code {code}. No logs available."
            self._move(
                rec,
                FAILED,
                message=message,
                exit_code=code,
                error_type=JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR,
            )
        self.save_logs(submission_id, logs)

    def request_stop(self, submission_id: str) -> bool:
        """Stop asked: True if the job had not ended (a PENDING job is STOPPED at once,
        a RUNNING one when its driver exits), False if it had."""
        rec = self.jobs[submission_id]
        if rec.info.status.is_terminal():
            return False
        rec.stop_requested = True
        if rec.info.status == PENDING:
            self._move(rec, STOPPED)
        else:
            self._save(rec)
        return True

    def delete(self, submission_id: str) -> bool:
        """Forget a job that ended; RuntimeError (Ray's words) if it has not."""
        rec = self.jobs.get(submission_id)
        status = rec.info.status if rec is not None else None
        if rec is None or not rec.info.status.is_terminal():
            raise RuntimeError(
                f"Attempted to delete job '{submission_id}', "
                f"but it is in a non-terminal state {status}."
            )
        del self.jobs[submission_id]
        self.storage.delete(TABLE, submission_id)
        self.storage.delete(LOGS_TABLE, submission_id)
        return True

    # -------------------------------------------------------------------- logs
    def save_logs(self, submission_id: str, text: str) -> None:
        data = text.encode("utf-8", "replace")[-MAX_SAVED_LOG_BYTES:]
        self.storage.put(LOGS_TABLE, submission_id, data)

    def saved_logs(self, submission_id: str) -> str | None:
        blob = self.storage.get(LOGS_TABLE, submission_id)
        return None if blob is None else blob.decode("utf-8", "replace")

    # ------------------------------------------------------------------ queries
    def get(self, submission_id: str) -> JobRecord | None:
        return self.jobs.get(submission_id)

    def info(self, submission_id: str) -> JobInfo | None:
        rec = self.jobs.get(submission_id)
        return None if rec is None else dataclasses.replace(rec.info)

    def records(self) -> list[JobRecord]:
        return sorted(self.jobs.values(), key=lambda r: r.info.start_time or 0)


__all__ = ["JOB_TRANSITIONS", "DriverLost", "JobRecord", "JobTable", "log_tail"]
