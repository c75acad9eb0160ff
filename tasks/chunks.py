"""Long files in chunks: the parent plans and publishes, each chunk stores its partial, and the
delivery that stores the last partial merges them into the job's result.

Nobody waits for anybody: a worker process holds one message at a time, so a parent blocked
on its children would deadlock a pool of one. Instead the parent task (``earshot.analyze``)
stores the plan, publishes one ``earshot.analyze_chunk(job_id, index)`` per chunk on the job's
queue and returns. Each chunk stores ``chunks/<index>.npz`` under the result prefix and flips
its row in ``job_chunks``; the job's counter is incremented on the job row (core.jobs), so
exactly one completion sees the last chunk and merges. Every step is safe to repeat: a
redelivered chunk whose partial is stored goes straight to the merge check, a second merge
writes the same files, and ``mark_succeeded`` is a conditional transition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Task, shared_task

from core.errors import BlobNotFound, JobNotFound
from core.jobs import Job
from core.names import (
    ANALYZE_CHUNK_TASK,
    CHUNK_PLAN_JSON,
    CHUNKS_DIR,
    QUEUE_FOR_PRIORITY,
    JobStatus,
    Priority,
    chunk_key,
    result_prefix,
    upload_key,
)
from core.runtime import Runtime
from tasks.outcomes import TRANSIENT_ERRORS, check_attempts, discard, job_outcome
from tasks.steps import after_end, cancel_checker, limits_of, retrier, runtime_of, store_result

if TYPE_CHECKING:
    from analysis.chunks import ChunkPlan
    from analysis.decode import AudioInfo

log = logging.getLogger(__name__)

# The stage a chunked job shows while its chunks run.
CHUNKS_STAGE = "chunks"


def plan_for(runtime: Runtime, job: Job, info: AudioInfo) -> ChunkPlan | None:
    """The chunk plan of a job whose header (``info``) declares more than
    EARSHOT_CHUNK_MIN_DURATION_S.

    None for a file to analyse in one pass (short, or of undeclared length).
    """
    from analysis.chunks import plan_chunks

    settings = runtime.settings
    if info.duration_s is None or info.duration_s <= settings.chunk_min_duration_s:
        return None
    plan = plan_chunks(
        info,
        profile=job.profile,
        chunk_s=settings.chunk_duration_s,
        overlap_s=settings.chunk_overlap_s,
    )
    return plan if plan.count > 1 else None


def start_chunks(runtime: Runtime, job: Job, plan: ChunkPlan) -> str:
    """Store the plan and publish every chunk not stored yet; the job stays running.

    A redelivered parent publishes the missing chunks again (a duplicate is harmless) or, when
    every partial is stored, merges them itself.
    """
    runtime.blobs.put_bytes(
        result_prefix(job.id) + CHUNK_PLAN_JSON, json.dumps(plan.to_dict()).encode()
    )
    if not runtime.jobs.start_chunks(job.id, plan.count):
        return runtime.jobs.get(job.id).status.value
    pending = runtime.jobs.pending_chunks(job.id)
    if not pending:
        return merge_if_complete(runtime, job)[0]
    runtime.jobs.update_progress(job.id, stage=CHUNKS_STAGE, percent=0.0)
    queue = QUEUE_FOR_PRIORITY[Priority(job.priority)].value
    for index in pending:
        runtime.celery.send_task(
            ANALYZE_CHUNK_TASK, args=[job.id, index], queue=queue, task_id=f"{job.id}-{index}"
        )
    log.info("job %s: %d chunks published to %s", job.id, len(pending), queue)
    return JobStatus.RUNNING.value


def run_chunk(
    runtime: Runtime, job_id: str, index: int, *, retry: Callable[[Exception], None]
) -> tuple[str, bool]:
    """The chunk task's body: ``(job status, whether this delivery ended the job)``."""
    # The analysis stack (librosa, numpy) loads when a task runs, not with the task module.
    from analysis.chunks import ChunkPlan, analyze_chunk

    try:
        job = runtime.jobs.get(job_id)
        if job.status.finished:
            return job.status.value, False
        attempts = runtime.jobs.claim_chunk(job_id, index)
    except JobNotFound:
        log.warning("job %s does not exist; chunk %d dropped", job_id, index)
        return "missing", False
    except TRANSIENT_ERRORS as exc:
        retry(exc)
        raise
    if attempts is None:
        # Stored by an earlier delivery, which may have died before merging.
        return merge_if_complete(runtime, job)

    with job_outcome(runtime, job, attempts=attempts, retry=retry, chunk=index) as outcome:
        check_attempts(runtime.settings, attempts)
        plan_json = runtime.blobs.get_bytes(result_prefix(job_id) + CHUNK_PLAN_JSON)
        plan = ChunkPlan.from_dict(json.loads(plan_json))
        with runtime.blobs.local_path(job.upload_key or upload_key(job_id)) as path:
            partial = analyze_chunk(
                path,
                plan,
                index,
                limits=limits_of(runtime.settings),
                progress=cancel_checker(runtime, job_id),
            )
        runtime.blobs.put_bytes(chunk_key(job_id, index), partial.to_bytes())
    if outcome.status is not None:
        return outcome.status, outcome.ended

    done, total = runtime.jobs.finish_chunk(job_id, index)
    if done < total:
        runtime.jobs.update_progress(
            job_id, stage=CHUNKS_STAGE, percent=100.0 * done / max(total, 1)
        )
        return JobStatus.RUNNING.value, False
    return merge_if_complete(runtime, job)


def merge_if_complete(runtime: Runtime, job: Job) -> tuple[str, bool]:
    """Merge the partials into the job's result once every chunk is stored.

    Returns ``(status, ended)``. Two deliveries may merge at once (a redelivery racing the
    first merger): both write the same files, one ``mark_succeeded`` wins, and the loser
    leaves the winner's result alone.
    """
    from analysis import ANALYZER_VERSION
    from analysis.chunks import ChunkPlan, Partial, merge

    if runtime.jobs.pending_chunks(job.id):
        return JobStatus.RUNNING.value, False
    prefix = result_prefix(job.id)
    try:
        plan = ChunkPlan.from_dict(json.loads(runtime.blobs.get_bytes(prefix + CHUNK_PLAN_JSON)))
        partials = [
            Partial.from_bytes(runtime.blobs.get_bytes(chunk_key(job.id, i)))
            for i in range(plan.count)
        ]
    except BlobNotFound:
        current = runtime.jobs.get(job.id)
        if current.status.finished:
            return current.status.value, False  # merged (or ended) by another delivery
        raise
    runtime.jobs.update_progress(job.id, stage="merging", percent=99.0)
    analysis = merge(plan, partials, sha256=job.sha256)
    store_result(runtime, job.id, analysis)
    if not runtime.jobs.mark_succeeded(
        job.id, result_prefix=prefix, analyzer_version=ANALYZER_VERSION
    ):
        current = runtime.jobs.get(job.id)
        if current.status is not JobStatus.SUCCEEDED:
            discard(runtime, current)  # canceled while merging: the cancel wins
        return current.status.value, False
    runtime.blobs.delete_prefix(prefix + CHUNKS_DIR)
    log.info("job %s: %d chunks merged", job.id, plan.count)
    return JobStatus.SUCCEEDED.value, True


@shared_task(name=ANALYZE_CHUNK_TASK, bind=True, ignore_result=True, acks_late=True)
def analyze_chunk_task(self: Task, job_id: str, index: int) -> str:
    """Analyse chunk ``index`` of job ``job_id``; the last chunk stored merges the result."""
    runtime = runtime_of(self)
    retry = retrier(self, f"job {job_id} chunk {index}")
    try:
        status, ended = run_chunk(runtime, job_id, index, retry=retry)
    except TRANSIENT_ERRORS as exc:
        retry(exc)
        raise
    if ended:
        # This delivery ended the job: plots and callback, as the single-pass task does.
        after_end(runtime, job_id)
    return status
