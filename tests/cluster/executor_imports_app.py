"""A spark-submit application whose tasks import the project on the executors (the feature jobs themselves never do:
their transforms are Spark expressions, so nothing of the project runs in an executor's Python).

    spark-submit --master spark://... [--py-files ctr_suite_jobs.zip] tests/cluster/executor_imports_app.py

The driver imports nothing of the project; each task imports ``features.schemas`` and reports where it came from.
Prints one JSON line ``{"executors": [...]}`` on success; fails with the executors' ModuleNotFoundError otherwise.
"""

import json

from pyspark.sql import SparkSession


def where_the_project_comes_from(partition):  # runs on an executor, in its own Python worker
    import sys

    from features import schemas

    yield {"python": sys.executable, "module": schemas.__file__, "raw_events": schemas.RAW_EVENTS.fieldNames()}


if __name__ == "__main__":
    spark = SparkSession.builder.appName("executor_imports").getOrCreate()
    found = spark.sparkContext.parallelize(range(4), 4).mapPartitions(where_the_project_comes_from).collect()
    print(json.dumps({"executors": found}))
    spark.stop()
