"""Helpers of the Airflow tests: every Airflow process runs in a subprocess with its own AIRFLOW_HOME.

Airflow reads its configuration once per process, when it is first imported; a subprocess per scenario keeps the
test run's own process free of Airflow and of any setting a scenario makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs import pipeline

DAGS_FOLDER = pipeline.DAGS_FOLDER


def airflow_env(airflow_home: Path, lakehouse: str, *, retries: int | None = None, **extra: str) -> dict[str, str]:
    """The pipeline's Airflow environment (project DAGs folder, SQLite under ``airflow_home``, local Spark).

    ``retries=None`` keeps the DAGs' own retry settings; the pipeline sets its own (fail fast, short delay).
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CTR_", "AIRFLOW"))}
    env = pipeline.airflow_env(airflow_home, lakehouse, retries=retries or 0, base=base, extra=extra)
    if retries is None:
        for key in ("CTR_RETRIES", "CTR_RETRY_DELAY_SECONDS"):
            if key not in extra:
                del env[key]
    return env


def run_python(code: str, env: dict[str, str], *, args: list[str] = (), timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter with ``env``; it prints one JSON document last, which is returned."""
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=pipeline.PROJECT_DIR)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
