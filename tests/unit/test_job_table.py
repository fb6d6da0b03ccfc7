"""The job table (head/jobs.py): Ray's job states and messages, and its rows in storage."""

from __future__ import annotations

import pytest

from raylite.exceptions import InvalidTransition
from raylite.head.jobs import DriverLost, JobTable, log_tail
from raylite.head.storage import MemoryStorage, SqliteStorage
from raylite.job_submission.common import JobErrorType, JobInfo, JobStatus


def test_a_job_moves_pending_running_succeeded_with_rays_messages():
    table = JobTable(MemoryStorage())
    rec = table.submit("a", "echo hi", runtime_env={"env_vars": {"K": "v"}}, metadata={"m": "1"})
    assert rec.info.status == JobStatus.PENDING
    assert rec.info.message == (
        "Job has not started yet. It may be waiting for the runtime environment to be set up."
    )
    table.started("a", pid=1234)
    assert table.info("a").status == JobStatus.RUNNING
    assert table.info("a").message == "Job is currently running."
    table.exited("a", 0, "hi\n")
    info = table.info("a")
    assert info.status == JobStatus.SUCCEEDED
    assert info.message == "Job finished successfully."
    assert info.driver_exit_code == 0
    assert info.end_time >= info.start_time
    assert table.saved_logs("a") == "hi\n"


def test_a_failed_driver_reports_its_exit_code_and_the_last_lines():
    table = JobTable(MemoryStorage())
    table.submit("b", "false")
    table.started("b", pid=1)
    table.exited("b", 3, "".join(f"line {i}\n" for i in range(30)))
    info = table.info("b")
    assert info.status == JobStatus.FAILED
    assert info.error_type == JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR
    assert info.message.startswith("Job entrypoint command failed with exit code 3, last")
    assert "line 29\n" in info.message
    assert "line 19\n" not in info.message  # the last 10 lines only
    table.submit("c", "false")
    table.started("c", pid=2)
    table.exited("c", 1, "")
    assert table.info("c").message == (
        "Job entrypoint command failed with exit code 1. No logs available."
    )


def test_stop_delete_and_duplicate_ids():
    table = JobTable(MemoryStorage())
    table.submit("p", "sleep 9")
    assert table.request_stop("p") is True  # PENDING: stopped at once
    assert table.info("p").status == JobStatus.STOPPED
    assert table.request_stop("p") is False  # already ended
    table.submit("r", "sleep 9")
    table.started("r", pid=5)
    with pytest.raises(RuntimeError, match="non-terminal state RUNNING"):
        table.delete("r")
    assert table.request_stop("r") is True
    assert table.info("r").status == JobStatus.RUNNING  # until its driver exits
    table.exited("r", -15, "")
    assert table.info("r").status == JobStatus.STOPPED
    assert table.info("r").message == "Job was intentionally stopped."
    with pytest.raises(ValueError, match="already exists"):
        table.submit("r", "true")
    assert table.delete("r") is True
    assert table.get("r") is None
    with pytest.raises(InvalidTransition, match="STOPPED -> RUNNING"):
        table.started("p", pid=9)


def test_records_and_logs_survive_a_restart_and_running_jobs_fail(tmp_path):
    path = tmp_path / "head.db"
    with SqliteStorage(str(path)) as storage:
        table = JobTable(storage)
        table.submit("done", "echo ok")
        table.started("done", pid=10)
        table.exited("done", 0, "ok\n")
        table.submit("running", "sleep 100")
        table.started("running", pid=4242)
        table.submit("pending", "true")
    with SqliteStorage(str(path)) as storage:
        table = JobTable(storage)
        actions = table.load()
        assert set(actions) == {DriverLost("pending", 0), DriverLost("running", 4242)}
        assert table.info("done").status == JobStatus.SUCCEEDED
        assert table.saved_logs("done") == "ok\n"
        for sid in ("running", "pending"):
            info = table.info(sid)
            assert info.status == JobStatus.FAILED
            assert "when the head stopped" in info.message
    with SqliteStorage(str(path)) as storage:  # and that verdict was saved too
        assert JobTable(storage).load() == []


def test_job_info_json_round_trip_as_rays():
    info = JobInfo(status="RUNNING", entrypoint="x", runtime_env={"env_vars": {"a": "b"}})
    data = info.to_json()
    assert data["status"] == "RUNNING"
    assert data["runtime_env_json"] == '{"env_vars": {"a": "b"}}'
    assert JobInfo.from_json(data) == info
    assert JobStatus.STOPPED.is_terminal()
    assert not JobStatus.RUNNING.is_terminal()
    assert str(JobStatus.FAILED) == "FAILED"


def test_log_tail_is_bounded():
    assert log_tail("x" * 50_000) == "x" * 20_000
    assert log_tail("a\nb\n") == "a\nb\n"


def test_the_dashboards_jobs_view_lists_newest_first_without_env_values():
    from raylite.dashboard import views

    table = JobTable(MemoryStorage())
    table.submit("old", "echo 1", runtime_env={"env_vars": {"SECRET": "s3cret"}})
    table.jobs["old"].info.start_time = 1
    table.submit("new", "echo 2")
    table.started("new", pid=7)
    out = views.jobs(table.records())
    assert out["total"] == 2
    assert [r["submission_id"] for r in out["rows"]] == ["new", "old"]
    assert out["rows"][0]["status"] == "RUNNING"
    assert "s3cret" not in str(out)
