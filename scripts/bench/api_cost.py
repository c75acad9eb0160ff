"""What one request costs the API process: CPU per upload, per status read, per /healthz.

Brings up `earshot serve` alone (no worker: the jobs stay queued), embedded or on PostgreSQL
+ RabbitMQ (``--scaled``), sends a few warm-up uploads, then ROUNDS rounds of N distinct 5-s
clip uploads (POST /v1/analyses), N status reads of those jobs (GET /v1/analyses/{id}) and N
/healthz, one request after another from one client, reading the API process's user + system
time in /proc before and after each batch.

    .venv/bin/python scripts/bench/api_cost.py [--scaled] [-n 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import bench_pipelines as pipelines  # noqa: E402 - needs ROOT on sys.path
from scripts.bench.harness import (  # noqa: E402
    Child,
    free_port,
    group_cpu_s,
    postgres_database,
    rabbitmq_vhost,
    run_earshot,
)

WARMUP = 10


@contextlib.contextmanager
def api_alone(workdir: Path, *, scaled: bool) -> Iterator[tuple[str, Child]]:
    with contextlib.ExitStack() as stack:
        settings: dict[str, str] = {}
        if scaled:
            settings["broker_url"] = stack.enter_context(rabbitmq_vhost())
            settings["database_url"] = stack.enter_context(postgres_database())
        env = pipelines.earshot_env(workdir, **settings)
        if scaled:
            run_earshot(["migrate"], env=env)
        port = free_port()
        api = Child(["serve", "--port", str(port)], env=env, log_path=workdir / "api.log")
        try:
            url = f"http://127.0.0.1:{port}"
            pipelines._wait_http(f"{url}/healthz", [api], "earshot serve")
            yield url, api
        finally:
            api.stop()


def main(argv: list[str] | None = None) -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scaled", action="store_true", help="PostgreSQL + RabbitMQ")
    parser.add_argument("-n", type=int, default=200, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    clips = pipelines.make_clips(5, WARMUP + args.n * args.rounds)
    with (
        tempfile.TemporaryDirectory(prefix="earshot-api-cost-") as tmp,
        api_alone(Path(tmp), scaled=args.scaled) as (url, api),
        httpx.Client(timeout=60) as client,
    ):
        pid = api.pid
        ids = [pipelines.earshot_submit(client, url, path) for path in clips[:WARMUP]]
        for r in range(args.rounds):
            batch = clips[WARMUP + r * args.n : WARMUP + (r + 1) * args.n]
            before = group_cpu_s(pid)
            ids = [pipelines.earshot_submit(client, url, path) for path in batch]
            upload = group_cpu_s(pid) - before
            before = group_cpu_s(pid)
            for job_id in ids:
                client.get(f"{url}/v1/analyses/{job_id}").raise_for_status()
            read = group_cpu_s(pid) - before
            before = group_cpu_s(pid)
            for _ in range(args.n):
                client.get(f"{url}/healthz").raise_for_status()
            health = group_cpu_s(pid) - before
            print(
                f"{'scaled-out' if args.scaled else 'embedded'}, round {r + 1}: API CPU per "
                f"upload {1000 * upload / args.n:.2f} ms, per status read "
                f"{1000 * read / args.n:.2f} ms, per /healthz {1000 * health / args.n:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
