"""train.amp / train.channels_last: auto resolved to the fastest format measured on this machine
(smalldl.formats): chosen by the timings, cached per machine and key, explicit settings honoured without a
measurement, one choice per run (pinned), the cache safe when several jobs write it at once."""

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from smalldl import formats, models
from smalldl.config import train_settings

CPU = torch.device("cpu")
TIMES = {"fp32": 3.0, "fp32+channels_last": 2.0, "bf16": 1.5, "bf16+channels_last": 2.5}


class FakeTimer:
    """Injected timings (seconds per step by candidate name); records what it was asked to time."""

    def __init__(self, times):
        self.times, self.calls = dict(times), []

    def __call__(self, fmt):
        self.calls.append(fmt.name)
        return self.times[fmt.name]


@pytest.fixture
def bf16(monkeypatch):
    """A device with bf16: all four candidates, whatever this machine's CPU has."""
    monkeypatch.setattr(formats, "bf16_supported", lambda device: True)


def choose(settings, timer, cache, **kw):
    model = models.build("smallcnn", 1)
    return formats.choose(settings, model=model, device=CPU, arch="smallcnn", timer=timer, cache=cache, **kw)


def test_auto_picks_the_fastest_measured_format_and_the_cache_answers_the_second_time(tmp_path, bf16):
    settings = train_settings({"crop": 20, "batch_size": 8})
    assert (settings["amp"], settings["channels_last"]) == ("auto", "auto")
    timer, cache = FakeTimer(TIMES), tmp_path / "formats.json"
    resolved, record = choose(settings, timer, cache)
    assert sorted(timer.calls) == sorted(TIMES)  # every candidate timed once
    assert (resolved["amp"], resolved["channels_last"]) == ("bf16", "off")
    assert record["chosen_by"] == "measured" and record["step_s"] == TIMES
    assert {k: v for k, v in resolved.items() if k not in ("amp", "channels_last")} == {
        k: v for k, v in settings.items() if k not in ("amp", "channels_last")
    }
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 1 and next(iter(entries.values()))["choice"] == "bf16"
    # the second job of this machine: no measurement, the same choice
    again = FakeTimer({k: 1.0 if k == "fp32" else 9.0 for k in TIMES})
    resolved2, record2 = choose(settings, again, cache)
    assert again.calls == [] and record2["chosen_by"] == "cache" and record2["step_s"] == TIMES
    assert (resolved2["amp"], resolved2["channels_last"]) == ("bf16", "off")
    # other timings choose otherwise; another crop (another key) is measured anew
    other = FakeTimer({**TIMES, "fp32+channels_last": 0.5})
    resolved3, record3 = choose(settings, other, tmp_path / "other.json")
    assert (resolved3["amp"], resolved3["channels_last"]) == ("off", "on") and record3["chosen_by"] == "measured"
    bigger = FakeTimer(TIMES)
    choose({**settings, "crop": 22}, bigger, cache)
    assert len(bigger.calls) == 4 and len(json.loads(cache.read_text())["entries"]) == 2


def test_times_within_the_noise_keep_the_earlier_candidate(tmp_path, bf16):
    """bf16 costs precision and channels_last is a change: within 5% of the fastest, fp32 / contiguous stay."""
    resolved, _ = choose(train_settings({"crop": 20}), FakeTimer(dict.fromkeys(TIMES, 1.0)), tmp_path / "f.json")
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "off")
    near = {"fp32": 1.0, "fp32+channels_last": 0.99, "bf16": 0.97, "bf16+channels_last": 1.2}
    resolved, _ = choose(train_settings({"crop": 21}), FakeTimer(near), tmp_path / "f.json")
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "off")
    faster = {**near, "bf16": 0.9}
    resolved, _ = choose(train_settings({"crop": 22}), FakeTimer(faster), tmp_path / "f.json")
    assert (resolved["amp"], resolved["channels_last"]) == ("bf16", "off")


def test_explicit_settings_are_honoured_without_measuring(tmp_path, bf16):
    cache = tmp_path / "formats.json"
    for amp, cl in (("off", "off"), ("bf16", "on"), ("off", "on"), ("bf16", "off")):
        timer = FakeTimer(TIMES)
        resolved, record = choose(train_settings({"amp": amp, "channels_last": cl}), timer, cache)
        assert timer.calls == [] and record["chosen_by"] == "settings" and record["step_s"] == {}
        assert (resolved["amp"], resolved["channels_last"]) == (amp, cl)
    assert not cache.exists()
    # one axis explicit: only the other is measured, and the explicit value stands even where slower
    timer = FakeTimer(TIMES)
    resolved, record = choose(train_settings({"amp": "off"}), timer, cache)
    assert sorted(timer.calls) == ["fp32", "fp32+channels_last"] and resolved["amp"] == "off"
    assert resolved["channels_last"] == "on" and record["chosen_by"] == "measured"
    timer = FakeTimer(TIMES)
    resolved, _ = choose(train_settings({"channels_last": "on"}), timer, cache)
    assert sorted(timer.calls) == ["bf16+channels_last", "fp32+channels_last"]
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "on")  # 2.0 s beats bf16's 2.5 s


def test_a_single_candidate_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "bf16_supported", lambda device: False)
    timer, cache = FakeTimer(TIMES), tmp_path / "formats.json"
    resolved, record = choose(train_settings({"channels_last": "off"}), timer, cache)
    assert timer.calls == [] and record["chosen_by"] == "only" and not cache.exists()
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "off")
    # without bf16, auto never picks it
    timer = FakeTimer({**TIMES, "bf16": 0.1})
    resolved, _ = choose(train_settings({}), timer, cache)
    assert sorted(timer.calls) == ["fp32", "fp32+channels_last"] and resolved["amp"] == "off"


def test_a_run_keeps_its_pinned_choice(tmp_path, bf16):
    """A resumed run reads back its own choice (another machine's cache, or none, would choose otherwise);
    another run (another identity) chooses anew."""
    pin, settings = tmp_path / "run" / "formats.json", train_settings({"crop": 20})
    resolved, record = choose(settings, FakeTimer(TIMES), tmp_path / "a.json", pin=pin, pin_id="run1")
    assert pin.exists() and record["chosen_by"] == "measured"
    timer = FakeTimer({**TIMES, "fp32": 0.1})
    resumed, record2 = choose(settings, timer, tmp_path / "b.json", pin=pin, pin_id="run1")
    assert timer.calls == [] and record2 == record and resumed == resolved
    other, _ = choose(settings, timer, tmp_path / "b.json", pin=pin, pin_id="run2")
    assert (other["amp"], other["channels_last"]) == ("off", "off") and len(timer.calls) == 4


def test_a_job_that_measured_alongside_another_adopts_the_recorded_choice(tmp_path, bf16):
    """Two jobs start together and both measure; the first to record its choice wins, and the other adopts
    it, so that every job of the machine trains in the same format."""
    cache, settings = tmp_path / "formats.json", train_settings({"crop": 20})
    key = formats.cache_key(CPU, arch="smallcnn", crop=20, batch_size=16, options=formats.candidates(settings, CPU))

    class Racing(FakeTimer):
        def __call__(self, fmt):
            if not self.calls:  # the other job records while this one measures
                formats._record(cache, key, {"choice": "fp32+channels_last", "step_s": {"fp32+channels_last": 1.0}})
            return super().__call__(fmt)

    resolved, record = choose(settings, Racing(TIMES), cache)
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "on") and record["chosen_by"] == "cache"


def _write_keys(args):
    path, worker = args
    for k in range(15):
        formats._record(Path(path), f"w{worker}-k{k}", {"choice": "fp32", "step_s": {}})


def test_concurrent_writers_lose_no_entry(tmp_path):
    cache = tmp_path / "formats.json"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_write_keys, [(str(cache), w) for w in range(4)])
    entries = json.loads(cache.read_text())["entries"]
    assert sorted(entries) == sorted(f"w{w}-k{k}" for w in range(4) for k in range(15))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_unreadable_cache_is_measured_again_and_rewritten(tmp_path, bf16):
    cache = tmp_path / "formats.json"
    cache.write_text("{not json")
    timer = FakeTimer(TIMES)
    _, record = choose(train_settings({"crop": 20}), timer, cache)
    assert len(timer.calls) == 4 and record["chosen_by"] == "measured"
    assert json.loads(cache.read_text())["version"] == formats.CACHE_VERSION


def test_a_cache_of_an_earlier_version_is_measured_again(tmp_path, bf16):
    """Choices timed with other kernels (an earlier CACHE_VERSION) are not trusted: measured again."""
    cache = tmp_path / "formats.json"
    settings = train_settings({"crop": 20})
    choose(settings, FakeTimer(TIMES), cache)  # measured and cached under this version
    data = json.loads(cache.read_text())
    data["version"] = formats.CACHE_VERSION - 1
    cache.write_text(json.dumps(data))
    timer = FakeTimer(TIMES)
    _, record = choose(settings, timer, cache)
    assert len(timer.calls) == 4 and record["chosen_by"] == "measured"
    assert json.loads(cache.read_text())["version"] == formats.CACHE_VERSION


def test_timing_steps_trains_a_copy_and_leaves_the_model_and_the_random_state_alone():
    torch.manual_seed(0)
    model = models.build("smallcnn", 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    ticks = iter(range(100))
    fmt = formats.Format("off", "on")
    seconds = formats.time_steps(model, fmt, device=CPU, crop=20, batch_size=4, clock=lambda: float(next(ticks)))
    assert seconds == 1.0  # a step between two ticks of the injected clock
    assert formats.time_steps(model, formats.Format("off", "off"), device=CPU, crop=20, batch_size=4) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert model.body.features[0].weight.is_contiguous()  # the copy, not the model, went channels_last


def test_format_names_and_keys():
    assert [f.name for f in formats.candidates(train_settings({"amp": "bf16"}), CPU)] == [
        "bf16",
        "bf16+channels_last",
    ]
    key = formats.cache_key(CPU, arch="densenet121", crop=236, batch_size=16, options=[formats.Format("off", "on")])
    assert f"torch {torch.__version__}" in key and "densenet121" in key and "crop 236" in key and "batch 16" in key
    assert "threads" in key and formats.machine_name(CPU) in key
