"""A job submitted from a host with no raylite node (h4): the client needs only the
dashboard's URL and the cluster token. Its working_dir travels over HTTP, its driver
runs on the head's machine (h1) and sends a task to h2; its logs, a stop, and a wrong
token from h4."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(600), pytest.mark.testnet_hosts(4)]

CLIENT = """
import asyncio, os, pathlib, sys, tempfile, time
from raylite.job_submission import JobSubmissionClient, JobStatus

url = "http://10.78.0.1:8265"
wd = pathlib.Path(tempfile.mkdtemp())
(wd / "helper_mod.py").write_text("VALUE = 21\\n")
(wd / "main.py").write_text(
    "import socket, helper_mod\\n"
    "import raylite as ray\\n"
    "ray.init()\\n"
    "@ray.remote(resources={'h2': 1})\\n"
    "def where(x):\\n"
    "    return socket.gethostname(), ray.get_runtime_context().get_node_id(), x * 2\\n"
    "print('result', ray.get(where.remote(helper_mod.VALUE))[2], flush=True)\\n"
)
client = JobSubmissionClient(url)
sid = client.submit_job(entrypoint=f"{sys.executable} main.py", runtime_env={"working_dir": str(wd)})

async def follow():
    return "".join([c async for c in client.tail_job_logs(sid)])

text = asyncio.run(asyncio.wait_for(follow(), 120))
done = {"status": str(client.get_job_status(sid)), "logs": text}

long = client.submit_job(entrypoint="echo up; sleep 300")
while "up" not in client.get_job_logs(long):
    time.sleep(0.05)
done["stopped"] = client.stop_job(long)
while not client.get_job_status(long).is_terminal():
    time.sleep(0.05)
done["long"] = str(client.get_job_status(long))

os.environ["RAYLITE_TOKEN"] = "not the cluster's"
try:
    JobSubmissionClient(url)
    done["wrong"] = "accepted"
except RuntimeError as exc:
    done["wrong"] = str(exc)
print(__import__("json").dumps(done))
"""


def test_a_job_submitted_from_a_host_without_a_node(cluster):
    cluster.start_node("h1", "--dashboard-host", "10.78.0.1", head=True)
    cluster.start_node("h2")
    out = cluster.driver("h4", CLIENT, timeout=300)
    assert out["status"] == "SUCCEEDED", out
    assert "result 42" in out["logs"]
    assert out["stopped"] is True
    assert out["long"] == "STOPPED"
    assert "status code 401" in out["wrong"]
    assert "RAYLITE_TOKEN" in out["wrong"]
