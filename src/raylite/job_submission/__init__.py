"""raylite.job_submission: Ray's job SDK (JobSubmissionClient, JobStatus, JobInfo,
JobDetails, JobType). The client is sdk.py, the value types common.py, the working_dir
zip packaging.py; the server side is dashboard/jobs_api.py and node/job_supervisor.py.
"""

from .common import DriverInfo, JobDetails, JobErrorType, JobInfo, JobStatus, JobType
from .sdk import JobSubmissionClient

__all__ = [
    "DriverInfo",
    "JobDetails",
    "JobErrorType",
    "JobInfo",
    "JobStatus",
    "JobSubmissionClient",
    "JobType",
]
