"""The test data itself: default tests use only what a fresh clone has, the fixtures are what
their scripts make, and the bundled table is the full NAS-Bench-201 table."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import nasrl
from conftest import GUARD, REPO, SHARED_DATA, TEST_DATA


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TEST_DATA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_fixtures_live_in_the_repository_or_the_package(fashion_dir: Path, ptb_dir: Path,
                                                                  nb201_table_path: Path) -> None:
    assert fashion_dir.is_relative_to(REPO) and ptb_dir.is_relative_to(REPO)
    assert nb201_table_path.is_relative_to(Path(nasrl.__file__).parent)
    assert not SHARED_DATA.is_relative_to(REPO)


def test_a_default_test_reading_the_shared_data_is_caught() -> None:
    assert GUARD.active and not GUARD.seen
    try:
        with pytest.raises(OSError):  # the guard sees the attempt, whether the file exists or not
            open(SHARED_DATA / "no-such-file.csv").close()
        subprocess.run([sys.executable, "-c", "pass", "--table", str(SHARED_DATA / "t.csv")], check=True)
        subprocess.run([sys.executable, "-c", "pass"], check=True, cwd=TEST_DATA)  # inside: fine
        assert len(GUARD.seen) == 2, GUARD.seen
        assert GUARD.seen[0].startswith("open ") and GUARD.seen[1].startswith("subprocess.Popen ")
    finally:
        GUARD.seen.clear()  # this test provoked them on purpose


def test_full_data_fixtures_refuse_unmarked_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text().replace(
        "REPO = Path(__file__).resolve().parents[1]", f"REPO = Path({str(REPO)!r})"))
    pytester.makepyfile(test_x="""
        import pytest

        def test_unmarked(full_ptb_dir):
            pass

        @pytest.mark.full_data
        def test_marked():
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs",
                                          "-o", "markers=full_data: needs ../shared/data")
    result.assert_outcomes(errors=1, **({"passed": 1} if SHARED_DATA.is_dir() else {"skipped": 1}))
    result.stdout.fnmatch_lines(["*test_unmarked uses ../shared/data: mark it @pytest.mark.full_data*"])


def test_generated_corpus_is_what_its_script_makes(ptb_dir: Path) -> None:
    make_text = load_script("make_text")
    for split, (seed, words) in make_text.SPLITS.items():
        assert make_text.corpus(seed, words) == (ptb_dir / f"ptb.{split}.txt").read_text(encoding="utf-8")


@pytest.mark.full_data
def test_fashion_fixture_is_what_its_script_cuts_from_the_full_data(full_fashion_dir: Path, fashion_dir: Path,
                                                                     tmp_path: Path) -> None:
    load_script("make_fashion").make(full_fashion_dir, tmp_path)
    for name in sorted(p.name for p in fashion_dir.iterdir()):
        assert gzip.decompress((tmp_path / name).read_bytes()) == gzip.decompress((fashion_dir / name).read_bytes())


@pytest.mark.full_data
def test_bundled_table_is_the_full_table(full_nb201_csv: Path, nb201_table_path: Path) -> None:
    assert gzip.decompress(nb201_table_path.read_bytes()) == full_nb201_csv.read_bytes()
