"""Core models of the portal: users, background jobs, audit log, API tokens, stored files."""

from .audit import AuditEvent
from .files import StoredFile
from .jobs import Job, JobState
from .tokens import ApiToken
from .users import User

__all__ = ["ApiToken", "AuditEvent", "Job", "JobState", "StoredFile", "User"]
