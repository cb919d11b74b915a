from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.fail(f"test data missing: {path} (tests expect ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def nb201_table_path() -> Path:
    return shared_file("nasbench201", "nb201_cifar10.csv")


@pytest.fixture(scope="session")
def nb201_table(nb201_table_path: Path):  # type: ignore[no-untyped-def]
    from nasrl.evaluators import TabularEvaluator

    return TabularEvaluator(nb201_table_path)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return shared_file("fashion-mnist", "train-images-idx3-ubyte.gz").parent


@pytest.fixture(scope="session")
def shared_ptb() -> Path:
    return shared_file("ptb", "ptb.valid.txt").parent
