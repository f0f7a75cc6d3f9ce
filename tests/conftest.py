"""Shared fixtures: one local Spark session with Delta for the whole run, and a fresh lakehouse per test."""

from __future__ import annotations

import pytest

from features.spark import get_spark
from features.tableio import Lakehouse


@pytest.fixture(scope="session")
def spark():
    # local[2] with few shuffle partitions (set by the factory's defaults); Delta is configured by the factory.
    session = get_spark("ctr-suite-tests", master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture
def lakehouse(tmp_path) -> Lakehouse:
    return Lakehouse(tmp_path / "lakehouse")
