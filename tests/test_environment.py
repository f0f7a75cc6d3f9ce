"""The pinned stack installs and works together: the versions DESIGN.md section 2 verified, on CPU."""

from __future__ import annotations

from importlib.metadata import version

import pytest

PINNED = {
    "pyspark": "4.0.1",
    "delta-spark": "4.0.1",
    "deltalake": "1.6.6",
    "petastorm": "0.12.1",
    "pyarrow": "14.0.2",
    "numpy": "1.26.4",
    "pandas": "2.2.3",
    "torchrec": "1.8.0",
    "fbgemm-gpu-cpu": "1.8.0",
    "apache-airflow": "3.1.8",
}


@pytest.mark.parametrize(("package", "expected"), sorted(PINNED.items()))
def test_pinned_versions_are_installed(package, expected):
    assert version(package) == expected


def test_torch_is_2_13_and_the_cuda_fbgemm_is_absent():
    assert version("torch").startswith("2.13.0")
    with pytest.raises(Exception):  # noqa: B017 - any "not installed" error will do
        version("fbgemm-gpu")  # the CUDA build fails to load without an NVIDIA driver


def test_torchrec_pools_a_jagged_batch_on_cpu():
    import torch
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    table = EmbeddingBagConfig(name="item_table", embedding_dim=2, num_embeddings=4, feature_names=["hist"])
    ebc = EmbeddingBagCollection(tables=[table])
    with torch.no_grad():
        ebc.embedding_bags["item_table"].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    batch = KeyedJaggedTensor.from_lengths_sync(
        keys=["hist"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 0, 1])
    )
    pooled = ebc(batch)["hist"]  # sum pooling: rows 1+2, nothing (empty bag), row 3
    assert pooled.tolist() == [[4.0, 6.0], [0.0, 0.0], [5.0, 6.0]]


def test_petastorm_and_the_airflow_spark_provider_import():
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from petastorm import make_batch_reader

    assert callable(make_batch_reader) and SparkSubmitOperator.__name__ == "SparkSubmitOperator"
