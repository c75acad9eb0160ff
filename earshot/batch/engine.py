"""The batch engine: every input through upload → wait → download, each step in the manifest."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from earshot.batch.discover import Input, output_paths
from earshot.batch.manifest import Manifest
from earshot.batch.progress import Reporter
from earshot.client import FINISHED, PENDING, ApiProblem, Client, TransientExhausted
from earshot.client.files import file_sha256, idempotency_key


@dataclass
class Options:
    out: Path
    profile: str = "standard"
    priority: str = "batch"
    formats: tuple[str, ...] = ("json",)
    retry_failed: bool = False
    poll_interval: float = 1.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Batch:
    """Runs every input through upload → wait → download, recording each step in the manifest."""

    def __init__(
        self, client: Client, manifest: Manifest, reporter: Reporter, options: Options
    ) -> None:
        self.client = client
        self.manifest = manifest
        self.reporter = reporter
        self.options = options
        self.stop = client.stop
        self.failed: set[str] = set()

    def record(self, inp: Input, facts: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path": inp.rel,
            "input": str(inp.path),
            "profile": self.options.profile,
            "job_id": None,
            "status": None,
            "error": None,
            "outputs": [],
            "attempt": 0,
            **facts,
            "updated_at": _now(),
        }
        record.update(fields)
        self.manifest.append(record)
        return record

    def process(self, inp: Input) -> str:
        """Handle one input; returns its final status for this run."""
        stat = inp.path.stat()
        sha = file_sha256(inp.path)
        facts = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha}
        previous = self.manifest.get(inp.rel)
        same = bool(
            previous
            and previous.get("sha256") == sha
            and previous.get("profile") == self.options.profile
        )
        attempt = int(previous.get("attempt") or 0) if previous and same else 0
        outputs = output_paths(self.options.out, inp.rel, self.options.formats)

        job: dict[str, Any] | None = None
        if previous and same:
            status = previous.get("status")
            if status == "succeeded" and all(p.exists() for p in outputs.values()):
                self.reporter.event(
                    "skipped", f"done already: {inp.rel}", path=inp.rel, reason="done"
                )
                return "succeeded"
            if status in FINISHED - {"succeeded"} and not self.options.retry_failed:
                error = previous.get("error") or {}
                self.failed.add(inp.rel)
                self.reporter.event(
                    "failed",
                    f"failed (earlier run; --retry-failed to retry): {inp.rel}: "
                    f"{error.get('code')}: {error.get('message')}",
                    path=inp.rel,
                    job_id=previous.get("job_id"),
                    code=error.get("code"),
                    message=error.get("message"),
                    earlier=True,
                )
                return str(status)
            if status in FINISHED - {"succeeded"}:
                attempt += 1
            elif previous.get("job_id"):
                # Queued, running, or succeeded with an output gone: the job is the source.
                with contextlib.suppress(ApiProblem):
                    job = self.client.get(str(previous["job_id"]))
                    self.reporter.event(
                        "resumed",
                        f"resumed: {inp.rel} job {job['id']}",
                        path=inp.rel,
                        job_id=job["id"],
                    )

        if job is None:
            try:
                key = idempotency_key(sha, profile=self.options.profile, attempt=attempt)
                job, created = self.client.upload(
                    inp.path, profile=self.options.profile, priority=self.options.priority, key=key
                )
            except (ApiProblem, TransientExhausted) as exc:
                return self._fail(inp, facts, None, exc.code, exc.detail, attempt)
            self.reporter.event(
                "uploaded",
                f"uploaded: {inp.rel} job {job['id']}" + ("" if created else " (existing job)"),
                path=inp.rel,
                job_id=job["id"],
                created=created,
                cached=bool(job.get("cached")),
            )
        self.record(inp, facts, job_id=job["id"], status=job.get("status"), attempt=attempt)

        try:
            job = self.wait(inp, facts, job, attempt)
        except TransientExhausted as exc:
            # The job lives on and the manifest still says queued/running: the next run polls it.
            self.failed.add(inp.rel)
            self.reporter.event(
                "failed",
                f"failed: {inp.rel}: lost contact with job {job['id']}: {exc}",
                path=inp.rel,
                job_id=job["id"],
                code=exc.code,
                message=exc.detail,
            )
            return "failed"
        except ApiProblem as exc:
            return self._fail(inp, facts, job["id"], exc.code, exc.detail, attempt)
        status = job.get("status")
        if status != "succeeded":
            error = job.get("error") or {}
            return self._fail(
                inp,
                facts,
                job["id"],
                str(error.get("code") or status),
                str(error.get("message") or f"job ended {status}"),
                attempt,
                status=str(status),
            )
        try:
            for fmt, dest in outputs.items():
                self.client.download(job, fmt, dest)
        except (ApiProblem, TransientExhausted) as exc:
            return self._fail(inp, facts, job["id"], exc.code, exc.detail, attempt)
        self.record(
            inp,
            facts,
            job_id=job["id"],
            status="succeeded",
            attempt=attempt,
            outputs=[p.relative_to(self.options.out).as_posix() for p in outputs.values()],
        )
        self.reporter.event("succeeded", f"succeeded: {inp.rel}", path=inp.rel, job_id=job["id"])
        return "succeeded"

    def wait(
        self, inp: Input, facts: Mapping[str, Any], job: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        def on_change(changed: dict[str, Any]) -> None:
            if changed.get("status") in PENDING:
                self.record(
                    inp, facts, job_id=changed["id"], status=changed["status"], attempt=attempt
                )

        return self.client.wait(job, poll_interval=self.options.poll_interval, on_change=on_change)

    def _fail(
        self,
        inp: Input,
        facts: Mapping[str, Any],
        job_id: str | None,
        code: str,
        message: str,
        attempt: int,
        *,
        status: str = "failed",
    ) -> str:
        self.record(
            inp,
            facts,
            job_id=job_id,
            status=status,
            attempt=attempt,
            error={"code": code, "message": message},
        )
        self.failed.add(inp.rel)
        self.reporter.event(
            "failed",
            f"failed: {inp.rel}: {code}: {message}",
            path=inp.rel,
            job_id=job_id,
            code=code,
            message=message,
        )
        return status
