"""An Airflow DAG that materializes a featurekit project every hour.

One task per view runs ``featurekit materialize <view> --json`` in the project folder
(the folder with featurekit.toml), upstream views first. A run that finds nothing new
writes nothing, and two overlapping runs lose nothing, so retries and catch-up runs are
safe. A failure exits non-zero with a one-line reason, which Airflow shows as the task log.

Written for Airflow 2 (on Airflow 3, import ``BashOperator`` from
``airflow.providers.standard.operators.bash``). Copy it into your DAGs folder and set ``FEATUREKIT_PROJECT`` (and ``VIEWS``: the views of
your definitions, upstream first). Not run in featurekit's CI: Airflow is too heavy to
install there; the tests only check that this file is valid Python.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

PROJECT = os.environ.get("FEATUREKIT_PROJECT", "/opt/features")
#: (view, the views it reads) in the order of the definitions
VIEWS: list[tuple[str, list[str]]] = [("driver_stats", [])]

with DAG(
    dag_id="featurekit_materialize",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
) as dag:
    tasks = {
        view: BashOperator(
            task_id=f"materialize_{view}",
            bash_command=f"cd {PROJECT} && featurekit materialize {view} --json",
        )
        for view, _ in VIEWS
    }
    for view, upstream in VIEWS:
        for parent in upstream:
            tasks[parent] >> tasks[view]
