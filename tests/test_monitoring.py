"""Drift monitoring: quiet on normal scores, alarms on shifted ones, the same however fed."""

import csv

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sklearn_memad import PaDiMDetector
from sklearn_memad.cli.exit_codes import EXIT_ALARM, EXIT_DATA, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from sklearn_memad.cli.main import main
from sklearn_memad.monitoring import DriftMonitor, cusum_limit
from sklearn_memad.persistence import save_model


def _normal(n, seed):
    return np.random.default_rng(seed).gamma(4.0, size=n)  # skewed, like anomaly scores


def test_normal_scores_raise_false_alarms_at_about_the_chosen_rate():
    # 40 streams of 5,000 normal images: the CUSUM's run length (10,000) and the KS blocks'
    # alpha (0.001 per 50) expect 200,000 * (1e-4 + 2e-5) = 24 alarms in all.
    alarms = 0
    for seed in range(40):
        monitor = DriftMonitor().fit(_normal(500, seed))
        alarms += len(monitor.update(_normal(5000, 1000 + seed)).alarms)
    assert alarms <= 40


def test_the_cusum_limit_gives_the_run_length_it_promises():
    # Standard normal increments, as Siegmund's formula assumes: simulated mean run length.
    limit = cusum_limit(200, 0.5)
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(300):
        upper = lower = 0.0
        for t, z in enumerate(rng.normal(size=20_000), start=1):
            upper, lower = max(0.0, upper + z - 0.5), max(0.0, lower - z - 0.5)
            if upper > limit or lower > limit:
                lengths.append(t)
                break
    assert 150 < np.mean(lengths) < 270


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_a_shift_of_the_scores_raises_the_cusum_soon(shift):
    reference = _normal(500, 0)
    monitor = DriftMonitor().fit(reference)
    assert not monitor.update(_normal(300, 1)).alarm
    shifted = _normal(300, 2) + shift * reference.std()
    state = monitor.update(shifted)
    assert state.alarm and state.alarms[0]["test"] == "cusum"
    assert 300 <= state.alarms[0]["image"] < 300 + (80 if shift == 0.5 else 25)


def test_a_wider_spread_at_the_same_median_is_caught_by_the_ks_test():
    reference = np.random.default_rng(0).normal(size=1000)
    monitor = DriftMonitor(window=100).fit(reference)
    wider = np.random.default_rng(1).normal(scale=2.5, size=400)
    state = monitor.update(wider)
    assert [alarm["test"] for alarm in state.alarms if alarm["test"] == "ks"]
    assert state.alarms[0]["image"] in (99, 199, 299, 399)


def test_feeding_one_at_a_time_or_in_batches_gives_the_same_alarms():
    reference = _normal(300, 0)
    stream = np.concatenate([_normal(120, 1), _normal(200, 2) + 3.0])
    whole = DriftMonitor(window=40).fit(reference).update(stream)
    single = DriftMonitor(window=40).fit(reference)
    for score in stream:
        state = single.update(score)
    uneven = DriftMonitor(window=40).fit(reference)
    for part in np.array_split(stream, [7, 50, 51, 200]):
        uneven_state = uneven.update(part)

    def where(alarms):
        return [(alarm["test"], alarm["image"]) for alarm in alarms]

    assert where(whole.alarms) == where(state.alarms) == where(uneven_state.alarms)
    assert len(whole.alarms) > 2
    np.testing.assert_allclose(whole.cusum, state.cusum)
    assert whole.share == state.share == uneven_state.share


def test_share_beyond_the_threshold_and_reset():
    reference = np.linspace(0, 1, 101)
    monitor = DriftMonitor(window=20).fit(reference, threshold=0.9)
    assert monitor.expected_share_ == pytest.approx(10 / 101)
    state = monitor.update(np.full(20, 0.95))
    assert state.share == 1.0 and state.alarm
    monitor.reset()
    assert not monitor.state().alarm and monitor.n_seen_ == 0 and monitor.state().share is None


def test_a_monitor_from_a_model_reads_its_out_of_sample_scores_and_threshold():
    grids = np.random.default_rng(0).normal(size=(40, 3, 3, 4)).astype(np.float32)
    detector = PaDiMDetector(contamination=0.1).fit(grids)
    monitor = DriftMonitor.from_model(detector)
    np.testing.assert_array_equal(monitor.reference_, np.sort(-detector.train_scores_))
    assert monitor.threshold_ == -detector.offset_
    assert monitor.expected_share_ == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize(
    "scores, error, message",
    [
        ([1.0, np.nan], ValueError, "scores holds 1 non-finite"),
        (np.ones((2, 2)), ValueError, "1-D array of scores; got shape"),
        (["a", "b"], TypeError, "scores must be numbers"),
    ],
)
def test_bad_scores_are_refused_and_change_nothing(scores, error, message):
    monitor = DriftMonitor().fit(_normal(100, 0))
    monitor.update(_normal(30, 1))
    before = monitor.state()
    with pytest.raises(error, match=message):
        monitor.update(scores)
    assert monitor.state() == before


def test_fitting_and_parameters_are_checked():
    with pytest.raises(ValueError, match="at least 20 reference scores"):
        DriftMonitor().fit(np.ones(5))
    with pytest.raises(NotFittedError):
        DriftMonitor().update([1.0])
    with pytest.raises(ValueError, match="alpha"):
        DriftMonitor(alpha=0.7).fit(_normal(100, 0))


# --------------------------------------------------------------------------- memad monitor
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    grids = np.random.default_rng(0).normal(size=(60, 3, 3, 4)).astype(np.float32)
    detector = PaDiMDetector(contamination=0.05).fit(grids)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(detector, path)
    return path, -detector.train_scores_


def _scores_csv(path, scores):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "error"])
        for i, score in enumerate(scores):
            writer.writerow([f"img{i}.png", f"{score:.6g}", ""])
        writer.writerow(["unreadable.png", "", "cannot read"])  # no verdict: skipped
    return path


def test_memad_monitor_is_quiet_on_normal_scores(model_file, tmp_path, capsys):
    path, reference = model_file
    rng = np.random.default_rng(1)
    scores = rng.choice(reference, size=150)
    code = main(["monitor", "--model", str(path), str(_scores_csv(tmp_path / "s.csv", scores))])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert "150 images" in out and "state: OK" in out and "expected" in out


def test_memad_monitor_exits_on_an_alarm_and_names_the_image(model_file, tmp_path, capsys):
    path, reference = model_file
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.choice(reference, 100), rng.choice(reference, 100) * 1.5])
    code = main(["monitor", "--model", str(path), str(_scores_csv(tmp_path / "s.csv", scores))])
    out = capsys.readouterr().out
    assert code == EXIT_ALARM
    assert "state: ALARM" in out and "first at img1" in out


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("no score column", EXIT_DATA, "no 'score' column"),
        ("missing file", EXIT_DATA, "does not exist"),
        ("not a model", EXIT_MODEL, "not a sklearn_memad model file"),
        ("bad alpha", EXIT_USAGE, "expected a number in (0, 0.5)"),
    ],
)
def test_memad_monitor_errors(case, code, message, model_file, tmp_path, capsys):
    path, reference = model_file
    scores = _scores_csv(tmp_path / "s.csv", reference[:30])
    argv = ["monitor", "--model", str(path), str(scores)]
    if case == "no score column":
        (tmp_path / "s.csv").write_text("path,value\na.png,1.0\n")
    elif case == "missing file":
        argv[-1] = str(tmp_path / "nothing.csv")
    elif case == "not a model":
        (tmp_path / "bad.safetensors").write_text("hello")
        argv[2] = str(tmp_path / "bad.safetensors")
    else:
        argv += ["--alpha", "0.7"]
    assert main(argv) == code
    assert message in capsys.readouterr().err
