"""The reconciler against a real filesystem:// broker folder and SQLite job store."""

from __future__ import annotations

from core.reconcile import job_ids_in_broker_folder, reconcile
from core.runtime import Runtime
from tests.tasks.conftest import submit


def test_lost_jobs_are_published_again(runtime: Runtime, wav_bytes: bytes) -> None:
    waiting = submit(runtime, wav_bytes)
    runtime.publish(waiting)
    # Queued, but its message went down with a worker that had reserved it.
    lost_queued = submit(runtime, wav_bytes)
    # Claimed by a worker that then died: the row still says running.
    lost_running = submit(runtime, wav_bytes)
    assert runtime.jobs.mark_running(lost_running.id)
    finished = submit(runtime, wav_bytes)
    runtime.jobs.mark_failed(finished.id, code="unreadable_audio", message="not audio")

    requeued = reconcile(runtime, workers_alive=False)

    assert sorted(requeued) == sorted([lost_queued.id, lost_running.id])
    assert job_ids_in_broker_folder(runtime) == {waiting.id, lost_queued.id, lost_running.id}
    assert runtime.jobs.get(lost_running.id).status == "queued"
    # The attempt of the dead delivery stays counted: a file that kills workers runs out.
    assert runtime.jobs.get(lost_running.id).attempts == 1


def test_with_live_workers_only_long_silent_jobs_count(runtime: Runtime, wav_bytes: bytes) -> None:
    busy = submit(runtime, wav_bytes)
    assert runtime.jobs.mark_running(busy.id)

    assert reconcile(runtime, workers_alive=True) == []
    assert job_ids_in_broker_folder(runtime) == set()
