"""The seed tutorial's design, as a reference for `make bench` (never shipped in the package).

What the tutorial this project started from builds: a FastAPI app that saves the upload to a
shared folder and sends a Celery task; a Celery worker (prefork, ``-c 2``) on RabbitMQ with the
``rpc://`` result backend that runs a tutorial librosa analysis (``librosa.load``, then each
feature from ``y``: scripts/bench/measure.py ``tutorial_pipeline``) and returns the summary as
the task result; the client polls the app, which asks the backend for the task's state.

    python scripts/bench/seed.py api --port 8100        # SEED_BROKER_URL, SEED_UPLOADS
    python scripts/bench/seed.py worker --concurrency 2

``POST /analyze`` (multipart ``file``) answers ``{"task_id"}``; ``GET /tasks/{task_id}``
answers ``{"state", "result"}``. Nothing else: no job store, no limits, no progress.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from celery import Celery  # noqa: E402 - after sys.path
from fastapi import FastAPI, UploadFile  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

BROKER_URL = os.environ.get("SEED_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
UPLOADS = Path(os.environ.get("SEED_UPLOADS", "/tmp/seed-uploads"))

celery = Celery("seed", broker=BROKER_URL, backend="rpc://")
celery.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])

_analysis: Any = None


@celery.task(name="seed.analyze")
def analyze(path: str) -> dict[str, Any]:
    """The tutorial's worker: librosa on the saved upload, the summary as the task result."""
    global _analysis
    if _analysis is None:
        from scripts.bench.measure import tutorial_pipeline

        _analysis = tutorial_pipeline()
    result: dict[str, Any] = _analysis(path)
    return result


def make_app() -> FastAPI:
    app = FastAPI(title="seed tutorial")
    UPLOADS.mkdir(parents=True, exist_ok=True)

    # async endpoints, as the tutorial writes them: both run on the event loop's one thread.
    # The rpc:// backend sends a task's result to a reply queue of the thread that sent it
    # (Celery's thread_oid); sync endpoints run in a thread pool, and a status request
    # served by another thread than the upload never saw its result (it stayed PENDING).
    @app.post("/analyze")
    async def upload(file: UploadFile) -> dict[str, str]:
        path = UPLOADS / f"{uuid.uuid4().hex}-{Path(file.filename or 'upload').name}"
        path.write_bytes(await file.read())
        task = analyze.delay(str(path))
        return {"task_id": task.id}

    @app.get("/tasks/{task_id}")
    async def status(task_id: str) -> JSONResponse:
        result = celery.AsyncResult(task_id)
        state = result.state
        body = {"state": state, "result": result.result if state == "SUCCESS" else None}
        return JSONResponse(body)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api")
    api.add_argument("--port", type=int, default=8100)
    worker = sub.add_parser("worker")
    worker.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "api":
        import uvicorn

        uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="warning")
        return 0
    celery.worker_main(
        ["worker", f"--concurrency={args.concurrency}", "--loglevel=INFO", "--without-gossip"]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
