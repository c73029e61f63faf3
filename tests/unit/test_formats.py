"""train.amp / train.channels_last (smalldl.formats): auto is a fixed device rule, the same on every machine
of a device type (no measurement, no cache); explicit settings are kept; the record says what ran, the CPU
kernels included; the explicit measurement (benchmarks/formats.py) times a copy and leaves the model alone."""

import re

import pytest
import torch

from smalldl import formats, models
from smalldl.config import train_settings

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device as the rule sees it (no GPU needed): its name, bf16 support as the test sets."""
    monkeypatch.setattr(formats, "machine_name", lambda device: f"{device.type} machine")
    support = {"bf16": True}
    monkeypatch.setattr(formats, "bf16_supported", lambda device: support["bf16"] if device.type == "cuda" else True)
    return support


def test_auto_is_fp32_and_contiguous_on_a_cpu_whatever_the_cpu_supports(gpu):
    """bf16_supported is True for the CPU here (the fixture): auto still means fp32, nothing timed."""
    resolved, record = formats.resolve(train_settings({}), CPU)
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "off")
    assert record == {
        "amp": "off", "channels_last": "off", "cpu_kernels": "off", "chosen_by": "device rule",
        "machine": "cpu machine",
    }  # fmt: skip


@pytest.mark.parametrize(("supported", "amp"), [(True, "bf16"), (False, "off")])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it_and_channels_last(gpu, supported, amp):
    gpu["bf16"] = supported
    resolved, record = formats.resolve(train_settings({"cpu_kernels": "on"}), CUDA)
    assert (resolved["amp"], resolved["channels_last"]) == (amp, "on")
    assert record["cpu_kernels"] == "off"  # no effect on CUDA, and the record says so


def test_explicit_settings_are_kept_and_recorded_as_the_settings(gpu):
    for device in (CPU, CUDA):
        for amp, cl in (("off", "off"), ("bf16", "on"), ("off", "on"), ("bf16", "off")):
            settings = train_settings({"amp": amp, "channels_last": cl, "crop": 20})
            resolved, record = formats.resolve(settings, device)
            assert (resolved["amp"], resolved["channels_last"]) == (amp, cl) and record["chosen_by"] == "settings"
            assert {k: v for k, v in resolved.items()} == dict(settings)
    resolved, record = formats.resolve(train_settings({"channels_last": "on"}), CPU)  # one auto left
    assert (resolved["amp"], resolved["channels_last"]) == ("off", "on") and record["chosen_by"] == "device rule"


def test_the_cpu_kernels_are_recorded_where_they_run(gpu):
    assert formats.resolve(train_settings({"cpu_kernels": "on"}), CPU)[1]["cpu_kernels"] == "on"
    assert formats.resolve(train_settings({}), CPU)[1]["cpu_kernels"] == "off"  # the schema's default


def test_the_rule_reads_no_cache_and_writes_nothing(gpu, tmp_path, monkeypatch):
    """Two machines, one config, the same arithmetic: nothing per host is consulted or left behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(formats, "time_steps", lambda *a, **k: pytest.fail("auto must not measure"))
    first = formats.resolve(train_settings({}), CPU)
    monkeypatch.setattr(formats, "machine_name", lambda device: "another machine")
    second = formats.resolve(train_settings({}), CPU)
    assert first[0] == second[0] and list(tmp_path.iterdir()) == []
    assert not hasattr(formats, "CACHE_VERSION") and not hasattr(formats, "choose")


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


def test_the_benchmarks_choice_prefers_fp32_and_contiguous_within_the_margin():
    options = formats.candidates(train_settings({"amp": "bf16"}), CPU)
    assert [f.name for f in options] == ["bf16", "bf16+channels_last"]
    four = [formats.Format(a, c) for a in ("off", "bf16") for c in ("off", "on")]
    near = {"fp32": 1.0, "fp32+channels_last": 0.99, "bf16": 0.97, "bf16+channels_last": 1.2}
    assert formats.fastest_of(four, near).name == "fp32"
    assert formats.fastest_of(four, {**near, "bf16": 0.5}).name == "bf16"


def test_the_formats_benchmark_prints_the_settings_to_write(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "formats.py"
    spec = importlib.util.spec_from_file_location("formats_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--arch", "smallcnn", "--crop", "20", "--batch", "4", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r'^train: \{amp: "(off|bf16)", channels_last: "(off|on)"\}$', out, re.M)
    assert "fp32+channels_last" in out  # every candidate timed (bf16 too where this CPU has it)
