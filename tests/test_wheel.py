"""``pip install earshot`` from a built wheel: a user's install, run from outside the checkout.

The wheel is built from a copy of this tree (``python -m build``, as ``make dist`` does) and
installed into a fresh virtual environment, then used from a folder that is not the checkout:
the commands, the web page's static files, the vendored API docs and the job store's
migrations must all come from the installed package. To stay lean the new environment borrows the
dependencies (librosa, FastAPI, ...) from this one through a path file instead of downloading
them, and the wheel itself is installed with ``--no-deps``; a path entry runs no ``.pth``
hooks, so this checkout's editable install stays out of the way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.package

# Run inside the new environment: where each package comes from, and what the API serves.
PROBE = r"""
import json, sys
from pathlib import Path
import analysis, api, core, earshot, tasks
from fastapi.testclient import TestClient
from api.app import create_app
from core.settings import Settings

homes = {m.__name__: str(Path(m.__file__).resolve()) for m in (analysis, api, core, earshot, tasks)}
client = TestClient(create_app(Settings(data_dir=sys.argv[1])))
served = {}
for path in ("/", "/static/app.js", "/static/style.css", "/static/vendor/swagger-ui-bundle.js"):
    response = client.get(path)
    served[path] = [response.status_code, len(response.content)]
served["/docs"] = [client.get("/docs").status_code, 0]
print(json.dumps({"homes": homes, "served": served}))
"""


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    # Built from a copy of the files git sees (tracked or new, not ignored), as a release is
    # built from a clean checkout: setuptools' build/ folder in the checkout may still hold a
    # module deleted since, which would end up in the wheel and hide a missing file.
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in listed:
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("earshot-*.whl")
    # Every file the checkout tracks under the package-data folders, licences and the vendored
    # docs' README (where those files come from) included.
    tracked = subprocess.run(
        ["git", "ls-files", "api/static", "core/migrations"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "api/static/vendor/README.md" in tracked
    with zipfile.ZipFile(wheel) as archive:
        assert set(tracked) <= set(archive.namelist()), set(tracked) - set(archive.namelist())

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["EARSHOT_DATA_DIR"] = str(outside / "var")
    earshot = str(env_dir / "bin" / "earshot")

    done = subprocess.run(
        [earshot, "analyze", "--json", str(REPO / "samples" / "click120_cmajor.flac")],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    # samples/README.md: 120 BPM in C major.
    assert (document["summary"]["key"]["tonic"], document["summary"]["key"]["mode"]) == (
        "C",
        "major",
    )
    assert abs(document["summary"]["tempo"]["bpm"] - 120) < 2

    migrated = subprocess.run(
        [earshot, "migrate"], cwd=outside, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    with contextlib.closing(sqlite3.connect(outside / "var" / "earshot.db")) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert "jobs" in tables
    newest = max(p.stem for p in (REPO / "core" / "migrations" / "versions").glob("0*.py"))
    assert newest.startswith(revision), (revision, newest)

    probe = subprocess.run(
        [python, "-c", PROBE, str(outside / "api-data")],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for name, home in found["homes"].items():
        assert home.startswith(str(site)), (name, home)  # the wheel's copy, not this checkout
    static = REPO / "api" / "static"
    assert found["served"] == {
        "/": [200, (static / "index.html").stat().st_size],
        "/static/app.js": [200, (static / "app.js").stat().st_size],
        "/static/style.css": [200, (static / "style.css").stat().st_size],
        "/static/vendor/swagger-ui-bundle.js": [
            200,
            (static / "vendor" / "swagger-ui-bundle.js").stat().st_size,
        ],
        "/docs": [200, 0],
    }
