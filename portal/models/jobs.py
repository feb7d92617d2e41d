"""Background jobs: one row per unit of heavy work done by a Celery worker."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.querysets import RestrictedQuerySet, restricted_models


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobQuerySet(RestrictedQuerySet):
    """A user sees the jobs they started and the jobs on objects they may see."""

    def restrict(self, user, action: str) -> JobQuerySet:
        # Acting on a job (cancel, retry) needs the same right on its target as changing it.
        target_action = "view" if action == "view" else "change"
        visible = Q(created_by=user)
        for model in restricted_models():
            if model is Job:
                continue
            ct = ContentType.objects.get_for_model(model)
            visible |= Q(
                target_type=ct,
                target_id__in=model._default_manager.for_user(user, target_action).values("pk"),
            )
        return self.filter(visible)


class Job(models.Model):
    """A background job: what it does, how far it got, and how it ended.

    Workers update the row and publish each change to the job's channel groups (see
    `portal.services.jobs`), so pages show progress live. `error` is the message for users;
    `traceback` is shown to staff only. `metrics` holds the points a job reports for plotting
    (`JobProgress.record`). `target` links the object the job works on; access to the job follows
    access to that object.
    """

    kind = models.CharField(max_length=100, db_index=True)
    state = models.CharField(
        max_length=20, choices=JobState.choices, default=JobState.QUEUED, db_index=True
    )
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="Fraction done, 0..1.")
    message = models.CharField(max_length=500, blank=True, default="")
    log = models.JSONField(default=list, blank=True, help_text="Log lines: [time, text].")
    error = models.TextField(blank=True, default="", help_text="Message shown to users.")
    traceback = models.TextField(blank=True, default="", help_text="Shown to staff only.")
    result = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(
        default=list, blank=True,
        help_text="Points of the series the job reports, oldest first (e.g. loss and accuracy per epoch).",
    )
    result_url = models.CharField(max_length=500, blank=True, default="")
    target_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_id = models.BigIntegerField(null=True, blank=True)
    target = GenericForeignKey("target_type", "target_id")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="jobs",
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    cancel_requested = models.BooleanField(default=False)
    celery_task_id = models.CharField(max_length=64, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    # Every published update carries the next value, so clients can order and de-duplicate.
    sequence = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1), name="job_progress_0_1"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.state})"

    @property
    def label(self) -> str:
        """The human name of the job's kind (kinds register themselves in portal.services.jobs)."""
        from portal.services.jobs import JOB_KINDS

        kind = JOB_KINDS.get(self.kind)
        return kind.label if kind else self.kind

    @property
    def is_finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()
