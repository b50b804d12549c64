"""bge_export/cost.py: a step's peak RSS measured by each method (nested steps keep theirs), the watchdog stopping
a step that really allocates past its limit, the estimate gate refusing in one line, and the fp32 weight count
the estimates start from."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bge_export.cost import (
    GETRUSAGE,
    PEAK_PER_WEIGHT_BYTE,
    PROCESS_BYTES,
    SAMPLED,
    VMHWM,
    CostMeter,
    MemoryLimitError,
    check_fits,
    fits,
    fp32_weight_bytes,
    machine_memory_bytes,
    measure_step,
    peak_method,
    rss_bytes,
)
from bge_export.errors import InputError

MB = 1_000_000
LINUX_PROC = Path("/proc/self/status").is_file()


def _hold(megabytes: int, seconds: float) -> None:
    """A real allocation, every page touched, held for a while. Mapped directly, not through malloc: late in a
    long test run an allocator may hand out freed pages that are still resident (CI saw no rise at all)."""
    import mmap

    block = mmap.mmap(-1, megabytes * MB)
    block.write(b"\1" * (megabytes * MB))
    time.sleep(seconds)
    block.close()


@pytest.mark.parametrize("method", [VMHWM, SAMPLED, GETRUSAGE])
def test_a_step_peak_is_measured_and_an_outer_step_keeps_its_inner_steps_peak(method: str) -> None:
    if method in (VMHWM, SAMPLED) and not LINUX_PROC:
        pytest.skip("needs /proc")
    if method == VMHWM and peak_method() != VMHWM:
        pytest.skip("no VmHWM in /proc/self/status here")
    import resource

    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = rss_bytes()
    with measure_step("outer", method=method) as outer:
        with measure_step("inner", method=method) as inner:
            _hold(120, 0.3)  # longer than the sampler's 0.1 s
        with measure_step("light", method=method) as light:
            time.sleep(0.01)
    assert inner.cost is not None and outer.cost is not None and light.cost is not None
    assert inner.cost.peak_rss_bytes >= before + 100 * MB
    assert outer.cost.peak_rss_bytes >= inner.cost.peak_rss_bytes
    # VmHWM is exact where the step set the process's record, else the samples tell (an earlier test peaked higher)
    assert inner.cost.method in ((VMHWM, SAMPLED) if method == VMHWM else (method,)) and inner.cost.seconds >= 0.3
    # measuring never resets the process's peak: /usr/bin/time and a parent's wait4 still see the real one
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >= lifetime_peak
    if method != GETRUSAGE:  # the only method that cannot start afresh per step
        assert light.cost.peak_rss_bytes < inner.cost.peak_rss_bytes - 80 * MB


def test_the_watchdog_stops_a_step_that_allocates_past_its_limit() -> None:
    handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    limit = rss_bytes() + 150 * MB
    grown: list[np.ndarray] = []
    meter = CostMeter(limit)
    with pytest.raises(MemoryLimitError) as stopped:
        with meter.step("int8"):
            for _ in range(400):  # at most 2 GB, were it never stopped
                grown.append(np.ones(5 * MB // 8))
                time.sleep(0.005)
    allocated = len(grown) * 5 * MB
    grown.clear()
    message = str(stopped.value)
    assert isinstance(stopped.value, InputError) and "\n" not in message  # one line, exit 2
    assert "step 'int8' reached" in message and "--max-memory limit" in message and "raise --max-memory" in message
    assert allocated < 150 * MB + 600 * MB  # stopped within a few samples of crossing, not at the 2 GB end
    assert meter.costs == []  # a stopped step records nothing
    if handler is not None:
        assert signal.getsignal(signal.SIGUSR1) == handler  # the process's own handler is back
    with measure_step("after", limit=rss_bytes() + 500 * MB) as after:  # the next step starts clean
        time.sleep(0.15)
    assert after.cost is not None


def test_a_step_outside_the_main_thread_is_judged_when_it_ends() -> None:
    raised: list[BaseException] = []

    def work() -> None:
        try:
            with measure_step("coreml", limit=MB):  # below any process: over the limit from the start
                time.sleep(0.25)
        except MemoryLimitError as exc:
            raised.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert len(raised) == 1 and "step 'coreml' reached" in str(raised[0])


def test_an_estimate_over_the_limit_is_refused_in_one_line_naming_the_step() -> None:
    weights = 438 * MB  # mpnet's fp32 weights
    assert fits("int8", weights, None) and fits("not-in-the-table", weights, MB)
    int8_estimate = int(PEAK_PER_WEIGHT_BYTE["int8"] * weights) + PROCESS_BYTES
    assert fits("int8", weights, int8_estimate) and not fits("int8", weights, int8_estimate - PROCESS_BYTES)
    check_fits(["export", "int8"], weights, int8_estimate)
    openvino_estimate = PEAK_PER_WEIGHT_BYTE["int8-openvino"] * weights + PROCESS_BYTES
    with pytest.raises(MemoryLimitError) as refused:
        check_fits(["export", "fp16", "int8-openvino"], weights, 2_500 * MB)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"step 'int8-openvino' needs an estimated {openvino_estimate / 1e9:.1f} GB")
    assert "over the --max-memory limit of 2.5 GB" in message and "nothing was done" in message
    assert (machine_memory_bytes() or 1) > 0


def test_fp32_weight_bytes_counts_floating_tensors_as_fp32_whatever_they_are_stored_in(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"half": np.zeros((10, 10), np.float16), "ids": np.zeros(7, np.int64)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "model.onnx").write_bytes(b"x" * 1234)
    (tmp_path / "broken.safetensors").write_bytes(b"not a header")
    assert fp32_weight_bytes([tmp_path / "m.safetensors"]) == 100 * 4 + 7 * 8
    assert fp32_weight_bytes([tmp_path / "model.onnx", tmp_path / "broken.safetensors"]) == 1234 + 12
