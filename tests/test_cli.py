"""The `n4a` command line: CliRunner for every command, and the installed script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from n4a_store.cli import main
from n4a_store.sweep import load_dataset

PLS = "sklearn.cross_decomposition.PLSRegression"
SMALL = {
    "name": "cli-small",
    "datasets": ["chemotools:fermentation"],
    "cv": {"n_splits": 2, "seed": 0},
    "pipeline": [
        {"class": "chemotools.feature_selection.RangeCut",
         "params": {"start": 950, "end": 1550, "x_axis": "$wavelengths"}},
        {"class": "chemotools.derivative.SavitzkyGolay",
         "params": {"window_length": 15, "polyorder": 2, "deriv": 1}},
        {"class": PLS, "params": {"n_components": {"_range_": [2, 3]}, "scale": False}},
    ],
}


def _invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small sweep run through `n4a sweep`, shared by the read-only command tests."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    ws = root / "ws"
    result = _invoke("sweep", str(config), "--workspace", str(ws), "--no-progress")
    assert result.exit_code == 0, result.output
    top = json.loads(_invoke("top", "-w", str(ws), "--json").output)
    return {"root": root, "ws": ws, "output": result.output, "top": top}


def test_sweep_prints_the_leaderboard(swept: dict):
    out = swept["output"]
    assert "Leaderboard fermentation: rmse (lower is better)" in out
    assert "2 pipelines, 2 completed, 0 failed" in out
    assert swept["top"][0]["pipeline_id"][:8] in out and swept["top"][0]["pipeline"] in out
    assert [r["rank"] for r in swept["top"]] == [1, 2]
    assert swept["top"][0]["val"] <= swept["top"][1]["val"]


def test_runs_top_and_show(swept: dict):
    ws = str(swept["ws"])
    runs = json.loads(_invoke("runs", "-w", ws, "--json").output)
    assert len(runs) == 1 and runs[0]["name"] == "cli-small" and runs[0]["pipelines"] == 2
    table = _invoke("runs", "-w", ws).output
    assert runs[0]["run_id"][:8] in table and "completed" in table
    best = swept["top"][0]
    for ident, kind in [(runs[0]["run_id"], "run"), (best["pipeline_id"], "pipeline"),
                        (best["chain_id"], "chain"), ("latest", "run"),
                        (best["pipeline_id"][:8], "pipeline")]:
        shown = _invoke("show", ident, "-w", ws, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["kind"] == kind
    text = _invoke("show", best["pipeline_id"], "-w", ws).output
    assert "Generator choices" in text and "pipeline[2].params.n_components" in text
    assert "Log" in text and "PLSRegression" in text
    pid = best["pipeline_id"]
    with_preds = _invoke("export", "--predictions", "-w", ws, "--run", "latest",
                         "-o", str(swept["root"] / "p.parquet"))
    assert with_preds.exit_code == 0
    frame = pl.read_parquet(swept["root"] / "p.parquet")
    assert frame.height == 2 * 8
    prediction_id = frame.filter(pl.col("pipeline_id") == pid)["prediction_id"][0]
    shown = json.loads(_invoke("show", prediction_id, "-w", ws, "--json").output)
    assert shown["kind"] == "prediction" and len(shown["y_true"]) == shown["n_samples"]


def test_export_and_predict_with_a_bundle(swept: dict):
    ws, root = str(swept["ws"]), swept["root"]
    best = swept["top"][0]
    bundle = root / "best.n4a"
    result = _invoke("export", best["chain_id"], "-w", ws, "-o", str(bundle))
    assert result.exit_code == 0 and bundle.is_file()
    config_out = _invoke("export", best["pipeline_id"], "-w", ws, "--format", "json")
    assert config_out.exit_code == 0
    assert json.loads(Path(config_out.output.strip()).read_text())
    run_yaml = _invoke("export", "latest", "-w", ws)
    assert run_yaml.output.strip().endswith(".yaml") and Path(run_yaml.output.strip()).is_file()

    ds = load_dataset("chemotools:fermentation")
    data = pl.DataFrame({f"{w:g}": ds.X_test[:, i] for i, w in enumerate(ds.wavelengths)})
    data = data.with_columns(pl.Series("glucose", ds.y_test))
    data.write_csv(root / "new.csv")
    predicted = _invoke("predict", str(bundle), str(root / "new.csv"), "--target", "glucose")
    assert predicted.exit_code == 0, predicted.output
    frame = pl.read_csv(predicted.stdout.encode())
    assert frame.columns == ["row", "glucose", "prediction"] and frame.height == 34
    assert best["test"] == pytest.approx(
        float(np.sqrt(np.mean((frame["prediction"].to_numpy() - ds.y_test) ** 2))))
    assert f"rmse={best['test']:.4f}" in predicted.stderr  # the target is there: metrics
    refused = _invoke("predict", str(bundle), str(root / "new.csv"))  # glucose is not a wavelength
    assert refused.exit_code == 1 and "'glucose' is not a wavelength" in refused.output


def test_predict_reorders_wavelength_columns_and_refuses_other_wavelengths(swept: dict):
    ws, root = str(swept["ws"]), swept["root"]
    bundle = root / "order.n4a"
    assert _invoke("export", swept["top"][0]["chain_id"], "-w", ws, "-o", str(bundle)).exit_code == 0
    ds = load_dataset("chemotools:fermentation")
    X = ds.X_test[:8]
    ordered = pl.DataFrame({f"{w:g}": X[:, i] for i, w in enumerate(ds.wavelengths)})
    ordered.write_csv(root / "ordered.csv")
    ordered.select(ordered.columns[::-1]).write_csv(root / "reversed.csv")
    expected = pl.read_csv(_invoke("predict", str(bundle), str(root / "ordered.csv")).output.encode())
    result = _invoke("predict", str(bundle), str(root / "reversed.csv"))
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(pl.read_csv(result.stdout.encode())["prediction"].to_numpy(),
                               expected["prediction"].to_numpy(), rtol=1e-9)
    shifted = pl.DataFrame({f"{w + 0.5:g}": X[:, i] for i, w in enumerate(ds.wavelengths)})
    shifted.write_csv(root / "shifted.csv")
    refused = _invoke("predict", str(bundle), str(root / "shifted.csv"))
    assert refused.exit_code == 1
    assert "wavelengths do not match" in refused.output and "428.5" in refused.output


def test_maintenance_commands(swept: dict):
    ws = str(swept["ws"])
    gc = _invoke("gc", "-w", ws)
    assert gc.exit_code == 0 and "removed 0 unreferenced artifact(s)" in gc.output
    compact = _invoke("compact", "-w", ws)
    assert compact.exit_code == 0 and "-> 1" in compact.output
    vacuum = _invoke("vacuum", "-w", ws)
    assert vacuum.exit_code == 0 and "vacuumed" in vacuum.output


def test_exit_codes_and_messages(tmp_path: Path):
    missing = _invoke("runs", "-w", str(tmp_path / "none"))
    assert missing.exit_code == 1 and "no workspace at" in missing.output
    assert not (tmp_path / "none").exists()
    assert _invoke("runs", "--bogus").exit_code == 2
    assert _invoke("sweep", str(tmp_path / "nope.yaml"), "-w", str(tmp_path)).exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(SMALL | {"pipeline": [{"class": "sklearn.nothing.Here"}]}))
    invalid = _invoke("sweep", str(bad), "-w", str(tmp_path / "ws"))
    assert invalid.exit_code == 2
    assert "invalid sweep config" in invalid.output and "pipeline step 0" in invalid.output
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump(SMALL | {"pipeline": SMALL["pipeline"][:2] + [
        {"class": PLS, "params": {"n_components": {"_or_": [2, 500]}}}]}))
    result = _invoke("sweep", str(failing), "-w", str(tmp_path / "ws"), "--no-progress")
    assert result.exit_code == 1
    assert "1 pipeline(s) failed" in result.output and "n_components" in result.output, result.output
    unknown = _invoke("show", "0123456789abcdef", "-w", str(tmp_path / "ws"))
    assert unknown.exit_code == 1 and "no run, pipeline, chain or prediction" in unknown.output


def _installed_n4a() -> str:
    found = shutil.which("n4a") or str(Path(sys.executable).parent / "n4a")
    if not Path(found).is_file():
        pytest.fail("the n4a console script is not installed next to the interpreter")
    return found


def test_installed_console_script_runs_a_sweep(tmp_path: Path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    env = {**os.environ, "N4A_WORKSPACE": str(tmp_path / "ws")}
    done = subprocess.run([_installed_n4a(), "sweep", str(config), "--jobs", "2", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_completed"] == 2 and summary["n_failed"] == 0
    top = subprocess.run([_installed_n4a(), "top", "--json"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert top.returncode == 0, top.stderr
    assert [r["pipeline_id"] for r in json.loads(top.stdout)] == [
        r["pipeline_id"] for r in summary["leaderboard"]]
    usage = subprocess.run([_installed_n4a(), "sweep"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert usage.returncode == 2 and "Missing argument 'CONFIG'" in usage.stderr
