"""`raylite job submit | status | logs | stop | list | delete`: Ray's job CLI.

Owns the command line and its output (Ray's words); every call goes through
job_submission.JobSubmissionClient, so the CLI needs only the dashboard's address and
the token (RAYLITE_TOKEN, or the local head's token file), no node of its own.

    raylite job submit [--address URL] [--submission-id ID] [--working-dir DIR]
        [--runtime-env FILE | --runtime-env-json JSON] [--metadata-json JSON]
        [--entrypoint-num-cpus N ...] [--no-wait] -- COMMAND ...
    raylite job status|stop|delete|logs [-f] ID       raylite job list

`submit` without --no-wait follows the logs until the job ends and exits with the
job's exit code (its driver's; 1 if it FAILED without one, e.g. stopped or never
started), so a script or CI step sees the job's own outcome. Ray's CLI exits 1 for
any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pprint
import shlex
import sys
import time
from typing import Any

from .job_submission import JobStatus, JobSubmissionClient


def _client(args: argparse.Namespace) -> JobSubmissionClient:
    try:
        return JobSubmissionClient(args.address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"raylite job: {exc}") from None


def _json_arg(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"raylite job: --{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"raylite job: --{flag} must be a JSON object")
    return value


def runtime_env_of(args: argparse.Namespace) -> dict[str, Any]:
    """Ray's merge: --runtime-env (a YAML or JSON file) or --runtime-env-json, then
    --working-dir over it."""
    if args.runtime_env and args.runtime_env_json:
        raise SystemExit("Only one of --runtime_env and --runtime-env-json can be provided.")
    env: dict[str, Any] = {}
    if args.runtime_env:
        with open(args.runtime_env) as f:
            text = f.read()
        try:
            env = json.loads(text)
        except ValueError:
            try:
                import yaml
            except ImportError:
                raise SystemExit(
                    f"raylite job: {args.runtime_env} is not JSON, and reading YAML needs "
                    "PyYAML (pip install pyyaml); or pass --runtime-env-json"
                ) from None
            env = yaml.safe_load(text) or {}
    elif args.runtime_env_json:
        env = _json_arg(args.runtime_env_json, "runtime-env-json")
    if args.working_dir is not None:
        env["working_dir"] = args.working_dir
    return env


def _print_status(client: JobSubmissionClient, job_id: str) -> JobStatus:
    info = client.get_job_info(job_id)
    status = JobStatus(info.status)
    if status == JobStatus.SUCCEEDED:
        _big(f"Job '{job_id}' succeeded")
    elif status == JobStatus.STOPPED:
        print(f"Job '{job_id}' was stopped")
    elif status == JobStatus.FAILED:
        _big(f"Job '{job_id}' failed")
        if info.message is not None:
            print(f"Status message: {info.message}")
    else:
        print(f"Status for job '{job_id}': {status}")
        if info.message is not None:
            print(f"Status message: {info.message}")
    return status


def _big(text: str) -> None:
    print()
    print("-" * len(text))
    print(text)
    print("-" * len(text))
    print()


async def _tail(client: JobSubmissionClient, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    entrypoint = list(args.entrypoint)
    if entrypoint and entrypoint[0] == "--":
        entrypoint = entrypoint[1:]
    if not entrypoint:
        raise SystemExit("raylite job submit: give the entrypoint after --, e.g. -- python x.py")
    client = _client(args)
    resources = _json_arg(args.entrypoint_resources, "entrypoint-resources")
    try:
        job_id = client.submit_job(
            entrypoint=shlex.join(entrypoint),
            submission_id=args.submission_id,
            runtime_env=runtime_env_of(args),
            metadata=_json_arg(args.metadata_json, "metadata-json"),
            entrypoint_num_cpus=args.entrypoint_num_cpus,
            entrypoint_num_gpus=args.entrypoint_num_gpus,
            entrypoint_memory=args.entrypoint_memory,
            entrypoint_resources=resources,
        )
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise SystemExit(f"raylite job submit: {exc}") from None
    _big(f"Job '{job_id}' submitted successfully")
    print("Next steps")
    print("  Query the logs of the job:")
    print(f"    raylite job logs {job_id}")
    print("  Query the status of the job:")
    print(f"    raylite job status {job_id}")
    print("  Request the job to be stopped:")
    print(f"    raylite job stop {job_id}")
    print(flush=True)
    if args.no_wait:
        return 0
    print("Tailing logs until the job exits (disable with --no-wait):", flush=True)
    asyncio.run(_tail(client, job_id))
    if _print_status(client, job_id) != JobStatus.FAILED:
        return 0
    code = client.get_job_info(job_id).driver_exit_code
    return code if isinstance(code, int) and 0 < code < 256 else 1


def _run(fn: Any, *a: Any) -> Any:
    try:
        return fn(*a)
    except RuntimeError as exc:
        raise SystemExit(f"raylite job: {exc}") from None


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    _run(_print_status, client, args.job_id)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    client = _client(args)
    print(f"Attempting to stop job '{args.job_id}'")
    _run(client.stop_job, args.job_id)
    if args.no_wait:
        return 0
    print(f"Waiting for job '{args.job_id}' to exit (disable with --no-wait):")
    while True:
        status = _run(client.get_job_status, args.job_id)
        if status.is_terminal():
            _print_status(client, args.job_id)
            return 0
        print(f"Job has not exited yet. Status: {status}")
        time.sleep(1)


def cmd_delete(args: argparse.Namespace) -> int:
    client = _client(args)
    _run(client.delete_job, args.job_id)
    print(f"Job '{args.job_id}' deleted successfully")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.follow:
        _run(client.get_job_info, args.job_id)  # an unknown id: Ray's 404 error
        asyncio.run(_tail(client, args.job_id))
    else:
        print(_run(client.get_job_logs, args.job_id), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    client = _client(args)
    print(pprint.pformat(_run(client.list_jobs)))
    return 0


def add_commands(sub: Any) -> None:
    job = sub.add_parser("job", help="submit, follow, stop, delete or list jobs")
    jobs = job.add_subparsers(dest="job_command", required=True)
    address_help = (
        "the dashboard's address, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, "
        "RAY_ADDRESS, else this machine's head)"
    )

    def command(name: str, help: str, func: Any, job_id: bool = True) -> argparse.ArgumentParser:
        p = jobs.add_parser(name, help=help)
        p.add_argument("--address", default=None, help=address_help)
        if job_id:
            p.add_argument("job_id", metavar="JOB_ID")
        p.set_defaults(func=func)
        parser: argparse.ArgumentParser = p
        return parser

    submit = command("submit", "run a command on the cluster as a job", cmd_submit, False)
    submit.add_argument("--submission-id", "--job-id", default=None, help="the job's id")
    submit.add_argument("--runtime-env", default=None, help="a YAML or JSON runtime_env file")
    submit.add_argument("--runtime-env-json", default=None, help="the runtime_env as JSON")
    submit.add_argument("--working-dir", default=None, help="local directory to run the job in")
    submit.add_argument("--metadata-json", default=None, help="JSON metadata for the job")
    submit.add_argument("--entrypoint-num-cpus", type=float, default=None)
    submit.add_argument("--entrypoint-num-gpus", type=float, default=None)
    submit.add_argument("--entrypoint-memory", type=int, default=None)
    submit.add_argument("--entrypoint-resources", default=None, help="JSON: resource -> amount")
    submit.add_argument("--no-wait", action="store_true", help="do not follow the logs")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    command("status", "a job's status", cmd_status)
    stop = command("stop", "stop a job", cmd_stop)
    stop.add_argument("--no-wait", action="store_true", help="do not wait for it to exit")
    command("delete", "forget a job that has ended", cmd_delete)
    logs = command("logs", "a job's output", cmd_logs)
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    command("list", "every job submitted to the cluster", cmd_list, False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raylite")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
