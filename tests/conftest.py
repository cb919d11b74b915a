"""Test data: small fixtures inside the repository by default, the full data sets for the
tests marked ``full_data``.

Default tests read only what a fresh clone has: ``tests/data`` (a Fashion-MNIST subset, a
generated corpus in PTB's layout; see tests/data/README.md) and the NAS-Bench-201 table
bundled with the package. Tests marked ``full_data`` need the full data sets in
``../shared/data`` beside the repository; they run when that folder exists and are skipped
with one line otherwise. A guard fails any default test that reads from ``../shared`` or
from the machine's data locations (an audit hook sees every file opened in this process and
every command line of a subprocess started from it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
FULL_DATA_SKIP = f"full data not found: {SHARED_DATA} (put the full data sets in ../shared/data to run this)"

# Where a default test must not read from: the shared data beside the repository and the
# places nasrl looks for data on a machine (a test that reads them depends on the machine).
OUTSIDE_DATA = tuple(
    os.path.abspath(os.path.expanduser(p)) + os.sep
    for p in (str(REPO.parent / "shared"), "/usr/share/datasets", "/usr/local/share/datasets",
              "/usr/local/share/nasrl", "~/.cache/nasrl")
)


def _outside(arg: object, cwd: str | None = None) -> str | None:
    """``arg`` when it names a path (or holds one, as in ``--opt=PATH``) in OUTSIDE_DATA."""
    if isinstance(arg, bytes):
        arg = os.fsdecode(arg)
    elif isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
    if not isinstance(arg, str) or not arg:
        return None
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
    full = os.path.abspath(os.path.join(cwd or os.getcwd(), value)) + os.sep
    return arg if any(full.startswith(p) or p in arg for p in OUTSIDE_DATA) else None


class DataGuard:
    """Records data read from outside the repository while a default test runs: files
    opened (and folders listed) in this process, and paths on the command line or in the
    ``NASRL_*`` environment of the subprocesses it starts (what those then open is theirs)."""

    def __init__(self) -> None:
        self.active = False
        self.seen: list[str] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event in ("open", "os.listdir", "os.scandir"):
            hits = [_outside(args[0])] if args else []
        elif event == "subprocess.Popen":
            executable, argv, cwd, env = args
            argv = [argv] if isinstance(argv, str | bytes | os.PathLike) else list(argv or [])
            env = os.environ if env is None else env
            cwd = os.fspath(cwd) if cwd is not None else None
            hits = [_outside(a, cwd) for a in [executable, *argv]]
            hits += [_outside(v, cwd) for k, v in env.items() if str(k).startswith("NASRL_")]
        else:
            return
        self.seen += [f"{event} {hit}" for hit in hits if hit is not None]


GUARD = DataGuard()
sys.addaudithook(GUARD)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # slow: minutes each on 2 cores (several Ray driver starts); run when asked, -m slow
    if "slow" not in (config.option.markexpr or ""):
        for item in items:
            if item.get_closest_marker("slow") is not None:
                item.add_marker(pytest.mark.skip(reason="slow; run with -m slow"))
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=FULL_DATA_SKIP)
    for item in items:
        if item.get_closest_marker("full_data") is not None:
            item.add_marker(skip)


def _guarded(item: pytest.Item) -> Generator[None, object, object]:
    """Wraps each phase (fixtures set up, the test, fixtures torn down) of a default test."""
    if item.get_closest_marker("full_data") is not None:
        return (yield)
    GUARD.seen.clear()
    GUARD.active = True
    try:
        result = yield
    finally:
        GUARD.active = False
    if GUARD.seen:
        pytest.fail("a default test read data from outside the repository (mark it full_data, or use "
                    "the fixtures in tests/data): " + "; ".join(dict.fromkeys(GUARD.seen)), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    return (yield from _guarded(item))


# -- default fixtures: inside the repository (or the package) --------------------------------
@pytest.fixture(scope="session")
def nb201_table_path() -> Path:
    """The NAS-Bench-201 table bundled with the package (gzip-compressed CSV)."""
    from nasrl.evaluators.tabular import bundled_nb201_table

    path = bundled_nb201_table()
    assert path is not None, "the package lacks nasrl/tables/nb201_cifar10.csv.gz"
    return path


@pytest.fixture(scope="session")
def nb201_table(nb201_table_path: Path):  # type: ignore[no-untyped-def]
    from nasrl.evaluators import TabularEvaluator

    return TabularEvaluator(nb201_table_path)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """3,000 train / 1,000 test Fashion-MNIST images, balanced (load with a val_size below 3,000)."""
    return TEST_DATA / "fashion-mnist"


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    """A generated corpus in PTB's layout: ptb.valid.txt and ptb.test.txt, no ptb.train.txt."""
    return TEST_DATA / "ptb"


# -- full data: only for tests marked full_data ----------------------------------------------
def shared_path(request: pytest.FixtureRequest, *parts: str) -> Path:
    if request.node.get_closest_marker("full_data") is None:
        pytest.fail(f"{request.node.nodeid} uses ../shared/data: mark it @pytest.mark.full_data")
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"full data not found: {path}")
    return path


@pytest.fixture
def full_nb201_csv(request: pytest.FixtureRequest) -> Path:
    return shared_path(request, "nasbench201", "nb201_cifar10.csv")


@pytest.fixture
def full_fashion_dir(request: pytest.FixtureRequest) -> Path:
    return shared_path(request, "fashion-mnist")


@pytest.fixture
def full_ptb_dir(request: pytest.FixtureRequest) -> Path:
    return shared_path(request, "ptb")
