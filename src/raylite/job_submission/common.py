"""The job records as Ray's job API shows them: JobStatus, JobInfo, JobDetails, JobType.

Owns the public value types and their JSON forms (the HTTP API's bodies), nothing
else: the job table (head/jobs.py) keeps JobInfo records and moves their status, the
supervisor (node/job_supervisor.py) runs drivers, the client (sdk.py) speaks HTTP.
Imports nothing of raylite, so the head and a laptop with no node both use it.

    client ──JSON──▶ dashboard (jobs_api) ──▶ JobTable[JobInfo] ──▶ storage rows (JSON)
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class JobStatus(str, enum.Enum):  # noqa: UP042 -- as Ray declares it
    """Ray's job states: PENDING -> RUNNING -> SUCCEEDED | FAILED | STOPPED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return f"{self.value}"

    def is_terminal(self) -> bool:
        """STOPPED, SUCCEEDED and FAILED are terminal: no status follows them."""
        return self.value in {"STOPPED", "SUCCEEDED", "FAILED"}


class JobErrorType(str, enum.Enum):  # noqa: UP042 -- as Ray declares it
    """Why a job failed (Ray's names; raylite uses the entrypoint ones and its own
    head restart)."""

    RUNTIME_ENV_SETUP_FAILURE = "RUNTIME_ENV_SETUP_FAILURE"
    JOB_SUPERVISOR_ACTOR_DIED = "JOB_SUPERVISOR_ACTOR_DIED"
    JOB_ENTRYPOINT_COMMAND_START_ERROR = "JOB_ENTRYPOINT_COMMAND_START_ERROR"
    JOB_ENTRYPOINT_COMMAND_ERROR = "JOB_ENTRYPOINT_COMMAND_ERROR"
    JOB_SUPERVISOR_ACTOR_START_TIMEOUT = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"


class JobType(str, enum.Enum):  # noqa: UP042 -- as Ray declares it
    """SUBMISSION: submitted through the job API. DRIVER: a script that called init()
    itself (listed from the head's drivers: driver_job)."""

    SUBMISSION = "SUBMISSION"
    DRIVER = "DRIVER"


def _has_resources(info: JobInfo) -> bool:
    return any(
        [
            (info.entrypoint_num_cpus or 0) > 0,
            (info.entrypoint_num_gpus or 0) > 0,
            (info.entrypoint_memory or 0) > 0,
            info.entrypoint_resources not in (None, {}),
        ]
    )


@dataclass
class JobInfo:
    """One submitted job, as Ray's JobInfo (times in ms since the epoch)."""

    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: JobErrorType | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.status, str):
            self.status = JobStatus(self.status)
        if isinstance(self.error_type, str):
            self.error_type = JobErrorType(self.error_type)
        if self.message is None:
            self.message = default_message(self)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, runtime_env as the string runtime_env_json (as Ray's)."""
        out = dataclasses.asdict(self)
        out["status"] = str(self.status)
        out["error_type"] = self.error_type.value if self.error_type else None
        env = out.pop("runtime_env")
        if env is not None:
            out["runtime_env_json"] = json.dumps(env)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobInfo:
        data = dict(data)
        env = data.pop("runtime_env_json", None)
        if env is not None:
            data["runtime_env"] = json.loads(env)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_message(info: JobInfo) -> str:
    """Ray's message for a status when none more precise was given."""
    status = info.status
    if status == JobStatus.PENDING:
        text = "Job has not started yet."
        if _has_resources(info):
            text += (
                " It may be waiting for resources "
                "(CPUs, GPUs, memory, custom resources) to become available."
            )
        if info.runtime_env not in (None, {}):
            text += " It may be waiting for the runtime environment to be set up."
        return text
    return {
        JobStatus.RUNNING: "Job is currently running.",
        JobStatus.STOPPED: "Job was intentionally stopped.",
        JobStatus.SUCCEEDED: "Job finished successfully.",
        JobStatus.FAILED: "Job failed.",
    }[status]


@dataclass
class DriverInfo:
    """The driver process of a job: its job id (hex), node address, pid."""

    id: str
    node_ip_address: str
    pid: str


@dataclass
class JobDetails:
    """A job with its type and driver, as Ray's JobDetails (a pydantic model there,
    a dataclass here: same fields, same names)."""

    type: JobType
    status: JobStatus
    entrypoint: str
    job_id: str | None = None
    submission_id: str | None = None
    driver_info: DriverInfo | None = None
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.type, str):
            self.type = JobType(self.type)
        if isinstance(self.status, str):
            self.status = JobStatus(self.status)
        if isinstance(self.driver_info, dict):
            self.driver_info = DriverInfo(**self.driver_info)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobDetails:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def dict(self) -> dict[str, Any]:  # pydantic's name, as Ray's JobDetails has it
        out = dataclasses.asdict(self)
        out["type"] = self.type.value
        out["status"] = self.status.value
        return out


@dataclass
class JobSubmitRequest:
    """The body of POST /api/jobs/ (Ray's fields, types checked as Ray checks them)."""

    entrypoint: str
    submission_id: str | None = None
    job_id: str | None = None  # Ray's deprecated name of submission_id
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    entrypoint_label_selector: dict[str, str] | None = None

    def __post_init__(self) -> None:
        def check(ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise TypeError(f"{what}, got {type(value)}")

        check(isinstance(self.entrypoint, str), "entrypoint must be a string", self.entrypoint)
        for name in ("submission_id", "job_id"):
            value = getattr(self, name)
            check(value is None or isinstance(value, str), f"{name} must be a string", value)
        for name in ("runtime_env", "metadata", "entrypoint_resources"):
            value = getattr(self, name)
            check(value is None or isinstance(value, dict), f"{name} must be a dict", value)
            for k in value or {}:
                check(isinstance(k, str), f"{name} keys must be strings", k)
        for meta in (self.metadata or {}).values():
            check(isinstance(meta, str), "metadata values must be strings", meta)
        for amount in (self.entrypoint_resources or {}).values():
            check(
                isinstance(amount, (int, float)),
                "entrypoint_resources values must be numbers",
                amount,
            )
        for name in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
            value = getattr(self, name)
            check(
                value is None or isinstance(value, (int, float)), f"{name} must be a number", value
            )
        check(
            self.entrypoint_memory is None or isinstance(self.entrypoint_memory, int),
            "entrypoint_memory must be an integer",
            self.entrypoint_memory,
        )

    def reserves_resources(self) -> bool:
        return any(
            [
                (self.entrypoint_num_cpus or 0) > 0,
                (self.entrypoint_num_gpus or 0) > 0,
                (self.entrypoint_memory or 0) > 0,
                self.entrypoint_resources not in (None, {}),
            ]
        )

    def resource_shape(self) -> dict[str, float]:
        """What the entrypoint reserves, by resource name (Ray's supervisor actor's
        num_cpus, num_gpus, memory, resources); {}: nothing."""
        shape = {
            "CPU": self.entrypoint_num_cpus or 0,
            "GPU": self.entrypoint_num_gpus or 0,
            "memory": self.entrypoint_memory or 0,
            **(self.entrypoint_resources or {}),
        }
        for name, amount in shape.items():
            if amount < 0:
                raise ValueError(f"entrypoint resource {name} must be >= 0, got {amount}")
        return {k: float(v) for k, v in shape.items() if v}


def driver_job(row: Mapping[str, Any]) -> JobDetails:
    """A driver that called init() itself, as Ray lists it: type DRIVER, its job id,
    RUNNING until it disconnects, then SUCCEEDED (Ray's rule for drivers)."""
    return JobDetails(
        type=JobType.DRIVER,
        status=JobStatus.SUCCEEDED if row["end_time"] else JobStatus.RUNNING,
        entrypoint=row["entrypoint"],
        job_id=row["job_id"],
        driver_info=DriverInfo(row["job_id"], row["ip"], str(row["pid"])),
        start_time=row["start_time"],
        end_time=row["end_time"],
        metadata={},
        runtime_env={},
    )


LABEL_SELECTOR_REFUSED = (
    "raylite runs a job's entrypoint on the head machine: entrypoint_label_selector is "
    "not implemented (leave it unset); give the work inside the job a label_selector "
    "(@remote(label_selector=...)) instead."
)

__all__ = [
    "LABEL_SELECTOR_REFUSED",
    "DriverInfo",
    "JobDetails",
    "JobErrorType",
    "JobInfo",
    "JobStatus",
    "JobSubmitRequest",
    "JobType",
    "driver_job",
]
