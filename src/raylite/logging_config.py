"""`ray.LoggingConfig`: the job's Python logging set-up, in the driver and every worker.

Owns the config (Ray 2.60's fields and checks: encoding TEXT or JSON, log_level,
additional_log_standard_attrs), its two formatters and the filter that adds the Ray
context (job, worker, node, task, actor ids) to each record. Not how the config
reaches the workers (init_options.py: the node's environment, applied at worker start).

    init(logging_config=LoggingConfig(...)) ──_apply()──▶ root + "raylite" loggers: one
        handler, its level, TEXT: "<time>\tINFO file.py:12 -- msg job_id=... task_id=..."
                               JSON: {"asctime": ..., "levelname": ..., "job_id": ...}
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

LOGGER_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"
_ENCODINGS = ("TEXT", "JSON")
LOGRECORD_STANDARD_ATTRS = frozenset(
    {
        "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName",
        "levelname", "levelno", "lineno", "message", "module", "msecs", "msg", "name",
        "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
        "threadName", "taskName",
    }
)  # fmt: skip
_TIMESTAMP = "_raylite_timestamp_ns"


class CoreContextFilter(logging.Filter):
    """Adds the Ray context to each record: job_id, worker_id, node_id and, in a worker,
    actor_id, task_id, task_name, task_func_name, actor_name (those that are set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .core import context

        setattr(record, _TIMESTAMP, time.time_ns())
        cw: Any = context._global
        if cw is None:  # raylite is not initialised: no context
            return True
        try:
            values: dict[str, Any] = {
                "job_id": cw.job_id.hex(),
                "worker_id": cw.worker_id.hex(),
                "node_id": cw.node_id.hex(),
            }
            if cw.mode == "worker":
                actor, task = cw.current_actor_id, cw.current_task_id
                values["actor_id"] = actor.hex() if actor is not None else None
                values["task_id"] = task.hex() if task is not None else None
                values["task_name"] = cw.current_task_name if task is not None else None
                values["task_func_name"] = values["task_name"]
                values["actor_name"] = cw.actor_options.get("name") if actor is not None else None
        except Exception:  # a record logged while the runtime stops: no context
            return True
        for key, value in values.items():
            if value is not None and value != "":
                setattr(record, key, value)
        return True


class _Formatter(logging.Formatter):
    def __init__(self, additional: list[str]) -> None:
        super().__init__()
        self.additional = additional

    def attrs(self, record: logging.LogRecord, standard: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if standard:
            out.update(
                asctime=self.formatTime(record),
                levelname=record.levelname,
                message=record.getMessage(),
                filename=record.filename,
                lineno=record.lineno,
                process=record.process,
            )
            if record.exc_info:
                if not record.exc_text:
                    record.exc_text = self.formatException(record.exc_info)
                out["exc_text"] = record.exc_text
        for key in self.additional:
            out[key] = getattr(record, key, None)
        for key, value in record.__dict__.items():
            if key not in LOGRECORD_STANDARD_ATTRS and key != _TIMESTAMP:
                out[key] = value
        if _TIMESTAMP in record.__dict__:
            out["timestamp_ns"] = record.__dict__[_TIMESTAMP]
        return out


class TextFormatter(_Formatter):
    def __init__(self, additional: list[str]) -> None:
        super().__init__(additional)
        self.inner = logging.Formatter(LOGGER_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        extra = " ".join(f"{k}={v}" for k, v in self.attrs(record, standard=False).items())
        return f"{text} {extra}"


class JSONFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.attrs(record, standard=True), default=str)


@dataclass
class LoggingConfig:
    """Logging of the driver and of every task and actor process of the job: the root
    logger and raylite's get one handler with this level and encoding."""

    encoding: str = "TEXT"
    log_level: str = "INFO"
    additional_log_standard_attrs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.encoding not in _ENCODINGS:
            raise ValueError(
                f"Invalid encoding type: {self.encoding}. Valid encoding types are: "
                f"{list(_ENCODINGS)}"
            )
        for attr in self.additional_log_standard_attrs:
            if attr not in LOGRECORD_STANDARD_ATTRS:
                raise ValueError(
                    f"Unknown python logging standard attribute: {attr}. The valid "
                    f"attributes are: {set(LOGRECORD_STANDARD_ATTRS)}"
                )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoggingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def _apply(self) -> None:
        """Set up this process's logging (Ray's DefaultLoggingConfigurator)."""
        formatter: _Formatter = (
            TextFormatter(self.additional_log_standard_attrs)
            if self.encoding == "TEXT"
            else JSONFormatter(self.additional_log_standard_attrs)
        )
        handler = logging.StreamHandler()
        handler.setLevel(self.log_level)
        handler.setFormatter(formatter)
        handler.addFilter(CoreContextFilter())
        root = logging.getLogger()
        root.setLevel(self.log_level)
        root.addHandler(handler)
        ours = logging.getLogger("raylite")
        ours.setLevel(self.log_level)
        for h in ours.handlers[:]:
            ours.removeHandler(h)
        ours.addHandler(handler)
        ours.propagate = False


__all__ = ["LoggingConfig"]
