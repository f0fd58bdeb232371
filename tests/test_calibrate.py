"""The calibration: whole rounds timed by the loop itself, the faster multiplication order
kept where it wins, measured once per pair and kind of sampling and cached; a cache that
cannot be used is measured again with a warning, never fatal."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from mlxspec import Session
from mlxspec.engine import Calibration, CalibrationWarning, calibrate
from mlxspec.engine.calibrate import CALIBRATION_VERSION, faster_order, sampling_kind, time_rounds
from mlxspec.engine.sampling import SamplingParams
from mlxspec.models import Linear, set_weight_first_rows
from test_speculative import DRAFTS, PROMPT, TARGET


@pytest.fixture(autouse=True)
def standard_order():
    """TARGET is shared with test_speculative, whose sessions apply calibrated orders to it."""
    set_weight_first_rows(TARGET, 0)


def orders(model) -> set[int]:
    return {m.weight_first_rows for m in model.modules() if isinstance(m, Linear)}


def test_sampling_params_name_their_kind():
    assert sampling_kind(SamplingParams(0.0, top_p=0.9)) == "greedy"
    assert sampling_kind(SamplingParams(1.0)) == "none"
    assert sampling_kind(SamplingParams(0.7, top_p=0.9)) == "top-p"
    assert sampling_kind(SamplingParams(0.7, top_k=40, top_p=0.9)) == "top-k+top-p"


def test_the_weight_first_order_is_kept_up_to_where_it_stops_winning():
    standard = {0: 1.0, 1: 1.2, 2: 1.4, 3: 1.6}
    assert faster_order(standard, {0: 1.0, 1: 1.1, 2: 1.3, 3: 1.7}) == (3, {0: 1.0, 1: 1.1, 2: 1.3, 3: 1.6})
    assert faster_order(standard, {0: 1.0, 1: 1.3, 2: 1.3, 3: 1.5}) == (0, standard)  # loses at k = 1: never


def test_rounds_are_timed_by_the_loop_without_touching_the_global_random_stream():
    for params in (SamplingParams(), SamplingParams(1.0, top_k=5)):
        mx.random.seed(42)
        expected = mx.random.uniform().item()
        mx.random.seed(42)
        times = time_rounds(TARGET, DRAFTS["random"], 3, params, orders=(0, 4), repeats=2, context=8)
        assert mx.random.uniform().item() == expected
        assert sorted(times) == [0, 4] and all(sorted(t) == [0, 1, 2, 3] for t in times.values())
        assert all(s > 0 for t in times.values() for s in t.values())
    assert orders(TARGET) == {0}  # left as it was


def test_calibration_is_measured_once_and_cached(tmp_path):
    first = calibrate(TARGET, DRAFTS["random"], 3, cache_dir=tmp_path)
    assert sorted(first.rounds) == [0, 1, 2, 3] and 0 <= first.weight_first_rows <= 4
    assert orders(TARGET) == {0}  # the caller applies the order, not the calibration
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert stored["version"] == CALIBRATION_VERSION and len(stored["entries"]) == 1
    key = next(iter(stored["entries"]))
    entry = stored["entries"][key]
    assert sorted(entry["rounds"]) == ["greedy"]
    entry["rounds"]["greedy"]["1"] = 123.0  # a cached value is read back, not re-measured
    entry["weight_first_rows"] = 3
    (tmp_path / "calibration.json").write_text(json.dumps(stored))
    again = calibrate(TARGET, DRAFTS["random"], 3, cache_dir=tmp_path)
    assert again.rounds[1] == 123.0 and again.weight_first_rows == 3
    # another kind of sampling: only its rounds are timed, into the same entry, in the stored order
    nucleus = calibrate(TARGET, DRAFTS["random"], 3, SamplingParams(0.7, top_p=0.9), cache_dir=tmp_path)
    assert nucleus.weight_first_rows == 3 and sorted(nucleus.rounds) == [0, 1, 2, 3]
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert sorted(stored["entries"][key]["rounds"]) == ["greedy", "top-p"]
    assert calibrate(TARGET, DRAFTS["random"], 3, SamplingParams(0.3, top_p=0.5), cache_dir=tmp_path).rounds == nucleus.rounds
    remeasured = calibrate(TARGET, DRAFTS["random"], 3, cache_dir=tmp_path, recalibrate=True)
    assert remeasured.rounds[1] != 123.0


def test_a_session_applies_the_order_it_was_timed_in(tmp_path):
    session = Session(TARGET, None, DRAFTS["random"], num_draft_tokens=3, calibration=Calibration(tmp_path))
    try:
        timings = session.timings(SamplingParams())
        assert orders(TARGET) == {timings.weight_first_rows}
    finally:
        for m in TARGET.modules():  # TARGET is shared with other tests
            if isinstance(m, Linear):
                m.weight_first_rows = 0


def valid_cache(tmp_path) -> dict:
    calibrate(TARGET, DRAFTS["random"], 2, cache_dir=tmp_path)
    return json.loads((tmp_path / "calibration.json").read_text())


def damage_entry(data: dict) -> bytes:
    entry = next(iter(data["entries"].values()))
    entry["rounds"]["greedy"].pop("1")
    return json.dumps(data).encode()


def wrong_order(data: dict) -> bytes:
    next(iter(data["entries"].values()))["weight_first_rows"] = "fast"
    return json.dumps(data).encode()


@pytest.mark.parametrize("damage", [
    lambda data: b"\x00\xff garbage \x9c",
    lambda data: b"",
    lambda data: b'{"version": ',
    lambda data: b"[1, 2, 3]",
    lambda data: json.dumps({**data, "version": CALIBRATION_VERSION - 1}).encode(),
    lambda data: json.dumps({"version": CALIBRATION_VERSION}).encode(),
    lambda data: json.dumps(next(iter(data["entries"].values()))).encode(),  # an entry without the file around it
    damage_entry,
    wrong_order,
], ids=["garbage", "empty", "truncated", "not-an-object", "older-version", "no-entries", "old-layout",
        "missing-round", "bad-order"])
def test_an_unusable_cache_is_measured_again_with_a_warning(tmp_path, damage):
    data = valid_cache(tmp_path)
    (tmp_path / "calibration.json").write_bytes(damage(data))
    with pytest.warns(CalibrationWarning, match="measuring again"):
        timings = calibrate(TARGET, DRAFTS["random"], 2, cache_dir=tmp_path)
    assert sorted(timings.rounds) == [0, 1, 2] and all(t > 0 for t in timings.rounds.values())
    repaired = json.loads((tmp_path / "calibration.json").read_text())  # and the cache is whole again
    assert repaired["version"] == CALIBRATION_VERSION and len(repaired["entries"]) >= 1


def test_an_unwritable_cache_only_costs_a_measurement(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    timings = calibrate(TARGET, DRAFTS["random"], 2, cache_dir=blocker / "cache")
    assert sorted(timings.rounds) == [0, 1, 2]


def test_generation_reports_a_corrupt_cache_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path))
    (tmp_path / "calibration.json").write_bytes(b"\x89PNG not json")
    from mlxspec import stream_generate

    with pytest.warns(CalibrationWarning):
        steps = list(stream_generate(TARGET, None, PROMPT, max_tokens=8, draft=DRAFTS["half"], num_draft_tokens=2))
    assert len(steps) == 8
