import pytest

from rnnlab.experiments import get_experiment, resolve_config, run_experiment


def test_zero_input_gives_exactly_the_matrix_powers(tmp_path):
    """With x = 0 and b = 0 the state stays 0, so dh(t)/dh(t-tau) = W^tau exactly."""
    result, run_dir = run_experiment(
        "gradient-decay",
        {"spectral-radii": "0.5,1.5", "hidden-size": "8", "max-lag": "25", "batch": "2",
         "input-scale": "0"},
        out_dir=tmp_path,
    )
    for row in result.rows:
        for tau in (1, 10, 25):
            assert row[f"J(tau={tau})"] == pytest.approx(row[f"W^{tau}"], rel=1e-9)
    # the per-step factor of ||W^tau|| tends to rho(W) (Gelfand's formula)
    assert result.rows[0]["per_step_factor"] == pytest.approx(0.5, rel=0.05)
    assert result.rows[1]["per_step_factor"] == pytest.approx(1.5, rel=0.05)
    assert (run_dir / "gradient_decay.png").is_file()


def test_vanishing_below_one_and_bounded_by_powers(tmp_path):
    result, _ = run_experiment(
        "gradient-decay",
        {"spectral-radii": "0.9,1.1", "hidden-size": "16", "max-lag": "40", "batch": "4",
         "input-scale": "0.5"},
        out_dir=tmp_path,
    )
    low, high = result.rows
    assert low["J(tau=25)"] < 0.2 * low["J(tau=1)"]        # vanishes
    assert high["J(tau=25)"] <= high["W^1"] ** 25 * 1.0001  # |1 - h^2| <= 1: <= ||W||^tau


def test_bad_options():
    exp = get_experiment("gradient-decay")
    with pytest.raises(ValueError, match="spectral_radii"):
        resolve_config(exp, {"spectral-radii": "0,1"})
    with pytest.raises(ValueError, match="norm"):
        resolve_config(exp, {"norm": "nuc"})
