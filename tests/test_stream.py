"""``rnnlab stream`` (rnnlab.online_stream): online forecasts line by line, the running
standardisation, malformed lines, checkpoints on EOF and on a real SIGTERM, and resumption that
is bit-identical to an uninterrupted run (same machine, same operations on the same values: the
printed ``repr`` of every forecast is compared as text)."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.online_stream import (
    LineParser,
    OnlineForecaster,
    RunningStandardizer,
    StreamConfig,
    StreamError,
    run_stream,
)


def _series(n: int, seed: int = 0) -> list[float]:
    gen = np.random.default_rng(seed)
    t = np.arange(n)
    values = np.sin(0.3 * t) + 0.5 * np.sin(0.11 * t) + 0.05 * gen.standard_normal(n)
    return values.tolist()  # Python floats: their repr is a plain number


def _lines(values: list[float]) -> list[str]:
    return [f"{v!r}\n" for v in values]


def _run(lines, config=None, **kwargs) -> tuple[list[str], str, object]:
    out, err = io.StringIO(), io.StringIO()
    result = run_stream(lines, config, out=out, err=err, **kwargs)
    return out.getvalue().splitlines(), err.getvalue(), result


CONFIGS = {
    "rls": StreamConfig(model="rls", units=30),
    "rtrl-elman": StreamConfig(model="rtrl", cell="elman", hidden=6),
    "uoro-gru": StreamConfig(model="rtrl", rule="uoro", cell="gru", hidden=4, lr=1e-3),
}


def test_running_standardizer_matches_numpy_on_every_prefix() -> None:
    gen = np.random.default_rng(1)
    data = gen.normal(3.0, 2.0, size=(50, 3))
    data[:, 2] = 7.0  # a constant column keeps the scale 1
    stats = RunningStandardizer(3)
    for n, row in enumerate(data, start=1):
        stats.update(torch.tensor(row))
        np.testing.assert_allclose(stats.mean.numpy(), data[:n].mean(0), rtol=1e-13)
        if n >= 2:
            # Welford's update against numpy's two-pass variance: both backward stable, so
            # they agree to a few ulps of the variance (relative 1e-12 leaves room)
            np.testing.assert_allclose(stats.std[:2].numpy(), data[:n, :2].std(0, ddof=1),
                                       rtol=1e-12)
        else:
            assert torch.equal(stats.std, torch.ones(3, dtype=torch.float64))
        assert float(stats.std[2]) == 1.0


def test_rls_forecast_equals_the_closed_form_ridge_of_the_lines_so_far() -> None:
    values = _series(60)
    config = StreamConfig(model="rls", units=20, standardize="none", delta=0.5)
    forecaster = OnlineForecaster(config)
    forecasts = [forecaster.step(torch.tensor([v, v], dtype=torch.float64)) for v in values]
    # reference: the reservoir run over the whole sequence at once (the batch path), features
    # z = [x; u; 1], ridge W = Y^T Z (Z^T Z + delta I)^-1 over the pairs (z_s, v_{s+1}), s < t
    u = torch.tensor(values, dtype=torch.float64).view(1, -1, 1)
    x = forecaster.esn.states(u)[0]
    z = torch.cat([x, u[0], torch.ones(len(values), 1, dtype=torch.float64)], dim=1)
    for t in (5, 30, 59):
        zs, ys = z[:t], u[0, 1:t + 1]
        w = torch.linalg.solve(zs.T @ zs + 0.5 * torch.eye(z.shape[1], dtype=torch.float64),
                               zs.T @ ys)
        expected = float(z[t] @ w)
        # RLS and the solve differ by rounding amplified by cond(Z^T Z + delta I) <= ~1e4 here
        # (eigenvalues between delta and t (N + 2) max|z|^2): |error| ~ t cond eps ~ 1e-10
        assert forecasts[t] == pytest.approx(expected, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_eof_and_resume_equals_one_run(tmp_path: Path, name: str) -> None:
    lines = _lines(_series(24))
    k = 11
    whole, _, _ = _run(lines, CONFIGS[name])
    first, _, res = _run(lines[:k], CONFIGS[name], checkpoint=tmp_path)
    assert res.checkpoint == tmp_path / "checkpoint.pt" and res.rows == k
    rest, _, res2 = _run(lines[k:], resume=tmp_path)
    assert res2.rows == len(lines)
    assert len(whole) == len(lines)
    assert first + rest == whole  # the printed reprs: bit-identical forecasts


def test_malformed_lines_are_reported_and_change_nothing() -> None:
    values = _series(20)
    clean, _, _ = _run(_lines(values), CONFIGS["rtrl-elman"])
    dirty_lines = _lines(values)
    dirty_lines[3:3] = ["abc\n", "nan\n", "\n", "1e999\n"]
    dirty, err, result = _run(dirty_lines, CONFIGS["rtrl-elman"])
    assert dirty == clean
    assert result.skipped == 3  # the blank line is skipped silently
    assert "line 4: not a number: 'abc' (skipped)" in err
    assert "line 5: not a finite number: 'nan'" in err
    assert "line 7: not a finite number: '1e999'" in err


def test_csv_rows_by_name_with_header_and_by_index(tmp_path: Path) -> None:
    rows = [(a, 2 * a, math.sin(a)) for a in np.linspace(0, 3, 15)]
    header = ["a,b,c\n"]
    named = [f"{a},{b},{c}\n" for a, b, c in rows]
    config = StreamConfig(model="rls", units=10, columns=["a", "c"], target="c")
    by_name, err, _ = _run(header + named, config)
    by_index, _, _ = _run(named, StreamConfig(model="rls", units=10, columns=["0", "2"],
                                              target="2"))
    assert by_name == by_index and len(by_name) == len(rows) and err == ""
    # the header is kept in the checkpoint: the resumed stream has none
    first, _, _ = _run(header + named[:6], config, checkpoint=tmp_path)
    rest, _, _ = _run(named[6:], resume=tmp_path)
    assert first + rest == by_name
    _, err, result = _run([*header, "1,2\n", "1,x,3\n", "1,2,y\n"], config)
    assert (result.skipped, result.rows) == (2, 1)  # column b is not used: line 3 is valid
    assert "line 2: expected 3 fields, got 2: '1,2'" in err
    assert "line 4: field 'c' = 'y': not a number: '1,2,y' (skipped)" in err
    assert "line 3" not in err
    with pytest.raises(StreamError, match="no column d"):
        _run(["a,b,c\n"], StreamConfig(columns=["a", "d"], target="a"))


def test_parser_and_config_errors() -> None:
    with pytest.raises(StreamError, match="--target"):
        StreamConfig(columns=["0", "1"]).check()
    with pytest.raises(ValueError, match="model"):
        StreamConfig(model="lstm").check()
    parser = LineParser(StreamConfig(columns=["0", "3"], target="0"), None)
    with pytest.raises(ValueError, match="at least 4 fields"):
        parser("1,2,3")


def test_checkpoint_folder_rules(tmp_path: Path) -> None:
    lines = _lines(_series(8))
    _run(lines, CONFIGS["rls"], checkpoint=tmp_path)
    with pytest.raises(StreamError, match="already holds a checkpoint"):
        _run(lines, CONFIGS["rls"], checkpoint=tmp_path)
    with pytest.raises(StreamError, match=r"units 30 \(given 50\)"):
        _run(lines, resume=tmp_path, given={"units": 50, "model": "rls"})
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StreamError, match="not a readable rnnlab stream checkpoint"):
        _run(lines, resume=tmp_path)


def test_cli_stream_prints_one_forecast_per_line(tmp_path: Path) -> None:
    runner = CliRunner()
    text = "".join(_lines(_series(12))) + "oops\n"
    result = runner.invoke(app, ["stream", "--units", "10", "--checkpoint", str(tmp_path)],
                           input=text)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 12
    assert "line 13: not a number: 'oops' (skipped)" in result.stderr
    again = runner.invoke(app, ["stream", "--resume", str(tmp_path), "--units", "11"],
                          input="1\n")
    assert again.exit_code == 2 and "units 10 (given 11)" in again.stderr
    bad = runner.invoke(app, ["stream", "--model", "nope"], input="1\n")
    assert bad.exit_code == 2 and "model" in bad.stderr


def test_sigterm_checkpoints_and_the_resumed_run_continues(tmp_path: Path) -> None:
    values = _series(30)
    lines = _lines(values)
    k = 12
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "stream", "--model", "rtrl", "--hidden", "6",
         "--checkpoint", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    watchdog = threading.Timer(120, proc.kill)  # a hung child fails the test, not the run
    watchdog.start()
    try:
        proc.stdin.write("".join(lines[:k]))
        proc.stdin.flush()  # stdin stays open: the process waits for more input
        printed = [proc.stdout.readline() for _ in range(k)]
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        stderr = proc.stderr.read()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM, stderr
    assert f"stopped by SIGTERM after {k} line(s)" in stderr
    rest, _, _ = _run(lines[k:], resume=tmp_path)
    whole, _, _ = _run(lines, StreamConfig(model="rtrl", hidden=6))
    assert [p.strip() for p in printed] + rest == whole


def test_rtrl_stream_learns_to_beat_persistence() -> None:
    values = _series(500)
    out, _, _ = _run(_lines(values), CONFIGS["rtrl-elman"])
    forecasts = np.array([float(v) for v in out[:-1]])
    truth = np.array(values[1:])
    late = slice(-150, None)
    mse = np.mean((forecasts[late] - truth[late]) ** 2)
    persistence = np.mean((np.array(values[:-1])[late] - truth[late]) ** 2)
    early = np.mean((forecasts[:100] - truth[:100]) ** 2)
    # measured: mse ~ 0.1 x persistence late, early error ~ 10 x the late one
    assert mse < 0.5 * persistence
    assert mse < 0.3 * early
