"""`python -m simulations.report`: tables equal their inputs, plots are PNGs, bad files are skipped."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest

from simulations import report
from simulations.report_benchmarks import ReportWarning

FIXTURES = Path(__file__).parent / "data" / "report"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        result = report.write_report(FIXTURES, out)
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]
    return out, result


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def fixture_rows(name: str, key: str = "rows") -> list[dict]:
    return json.loads((FIXTURES / "benchmarks" / name).read_text())[key]


def test_pate_table_numbers_equal_the_benchmark_rows(written):
    out, _ = written
    table = [r for r in read_csv(out / "pate.csv") if r["source"] == "benchmarks/pate.json"]
    rows = fixture_rows("pate.json")
    assert len(table) == len(rows)
    for row, got in zip(rows, table, strict=True):
        assert (got["method"], got["student"]) == (row["method"], row["student"])
        assert float(got["accuracy"]) == pytest.approx(row["accuracy"])
        assert float(got["accuracy_std"]) == pytest.approx(row["accuracy_std"])
        assert float(got["answered"]) == pytest.approx(row["answered"])
        assert float(got["epsilon_data_dependent"]) == pytest.approx(float(row["epsilon_data_dependent"]))
    # × non-private is the row's accuracy over the non-private row's
    non_private = rows[0]["accuracy"]
    assert float(table[2]["accuracy_vs_non_private"]) == pytest.approx(rows[2]["accuracy"] / non_private)


def test_a_sweep_averages_the_seeds_of_one_setting(written):
    out, _ = written
    sweep = {r["source"]: r for r in read_csv(out / "pate.csv") if r["source"].startswith("pate_sweep")}
    # runs 0 and 1 differ only in their seed (σ = 2: 0.70 and 0.76); run 2 is another setting (σ = 4)
    assert float(sweep["pate_sweep"]["accuracy"]) == pytest.approx(0.73)
    assert float(sweep["pate_sweep"]["accuracy_std"]) == pytest.approx(0.0424264, rel=1e-5)
    assert sweep["pate_sweep"]["seeds"] == "2"
    assert float(sweep["pate_sweep/2"]["accuracy"]) == pytest.approx(0.65)


def test_vertical_and_psi_tables_equal_the_benchmark_rows(written):
    out, _ = written
    vertical = [r for r in read_csv(out / "vertical.csv") if r["source"] == "benchmarks/vertical.json"]
    expected = {(r["method"], r["aligned_fraction"]): r["accuracy"] for r in fixture_rows("vertical.json")}
    assert {(r["method"], float(r["aligned_fraction"])): float(r["accuracy"]) for r in vertical} == expected
    psi = [r for r in read_csv(out / "psi.csv") if r["source"] == "benchmarks/psi.json"]
    assert [(int(r["n"]), r["variant"], float(r["ids_per_s"])) for r in psi] == [
        (r["n"], r["variant"], r["ids_per_s"]) for r in fixture_rows("psi.json")
    ]
    markdown = (out / "report.md").read_text()
    assert "| 90.4 ± 0.5 |" in markdown  # the prototype method at f = 0.05, as a percentage


def test_each_plot_is_a_non_empty_png(written):
    out, result = written
    for name in ("pate.png", "vertical.png", "psi.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
        assert out / name in result["written"]


def test_malformed_and_unknown_files_are_skipped_with_a_warning_naming_them(written):
    _, result = written
    skipped = dict(result["collection"].skipped)
    assert set(skipped) == {"broken/bad_accuracy.json", "broken/truncated.json", "broken/unknown.json"}
    assert "accuracy must be a number, got 'high'" in skipped["broken/bad_accuracy.json"]
    assert "not a results file" in skipped["broken/unknown.json"]
    for name in skipped:
        assert any(name in message for message in result["warnings"])
    # files a run writes beside its results are passed over silently
    assert not any("privacy_ledger" in m or "summary.json" in m for m in result["warnings"])


def test_the_readme_marker_sections_are_rewritten_and_nothing_else(tmp_path):
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nhand-written text\n\n", "\nmore hand-written text\n"
    readme.write_text(f"{before}<!-- report:pate:begin -->\nstale\n<!-- report:pate:end -->\n{after}")
    shutil.copytree(FIXTURES / "benchmarks", tmp_path / "results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        report.write_report(tmp_path / "results", tmp_path / "docs", readme)
    text = readme.read_text()
    assert text.startswith(before + "<!-- report:pate:begin -->\n") and text.endswith(after)
    assert "stale" not in text and "| 0.951 ± 0.004 |" in text and "](docs/pate.png)" in text
    again = readme.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        report.write_report(tmp_path / "results", tmp_path / "docs", readme)
    assert readme.read_text() == again  # regenerating is idempotent


def test_one_run_directory_is_a_report_of_its_own(tmp_path):
    result = report.write_report(FIXTURES / "vertical_run", tmp_path)
    rows = read_csv(tmp_path / "vertical.csv")
    assert [(r["method"], float(r["accuracy"])) for r in rows] == [("proto", 0.925)]
    assert result["collection"].skipped == []


def test_the_command_reports_bad_arguments_and_an_empty_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        report.main([str(tmp_path / "nowhere")])
    assert missing.value.code == 2 and "DIR must exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as empty:
        report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert empty.value.code == 2 and "error: no results under" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
