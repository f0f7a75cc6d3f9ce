"""``python -m jobs.demo``: the former name of the main command, now :mod:`jobs.pipeline` (same arguments).

The demo used to run the feature jobs and the training in one process; the main command runs the same pipeline
through the Airflow DAGs (``airflow_dags/``) with real Airflow. See ``python -m jobs.pipeline --help``.
"""

from __future__ import annotations

import sys

from jobs.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
