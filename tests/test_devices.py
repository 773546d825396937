"""The GPU allocator (uniq/devices.py) with fake GPU counts and real lock files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from uniq import devices


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """Pretend torch sees ``n`` GPUs; locks go to a fresh directory."""

    def set_count(n: int, visible: str | None = None) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    for var in ("UNIQ_JOBS_PER_GPU", "UNIQ_GPU_REQUIRED", "UNIQ_GPU_WAIT_S"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("UNIQ_GPU_LOCK_DIR", str(tmp_path / "locks"))
    return set_count


def test_slots_fill_breadth_first_then_fall_back_to_cpu(fake_gpus, caplog):
    fake_gpus(2)
    leases = [devices.acquire_gpu(jobs_per_gpu=2) for _ in range(4)]
    assert [str(lease.device) for lease in leases] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert len({lease.lock_path for lease in leases}) == 4
    with caplog.at_level(logging.WARNING, logger="uniq.devices"):
        extra = devices.acquire_gpu(jobs_per_gpu=2)
    assert extra.device == torch.device("cpu")
    assert "all 2 GPU(s) x 2 slots are taken" in caplog.text
    assert "falling back to the CPU" in caplog.text
    # Releasing one slot makes exactly that GPU available again.
    leases[1].release()
    assert devices.acquire_gpu(jobs_per_gpu=2).device == torch.device("cuda:1")


def test_no_fallback_raises_and_names_the_fix(fake_gpus, monkeypatch):
    fake_gpus(1)
    monkeypatch.setenv("UNIQ_JOBS_PER_GPU", "1")
    held = devices.acquire_gpu(jobs_per_gpu=1)
    assert held.device == torch.device("cuda:0")
    with pytest.raises(devices.NoGpuError, match="slots are taken.*--device cpu"):
        devices.acquire_gpu(jobs_per_gpu=1, allow_cpu_fallback=False)
    with pytest.raises(devices.NoGpuError):
        with devices.device_for("cuda"):
            pass


def test_no_gpu_at_all(fake_gpus, monkeypatch, caplog):
    fake_gpus(0)
    with caplog.at_level(logging.WARNING, logger="uniq.devices"):
        with devices.device_for("auto") as device:
            assert device == torch.device("cpu")
    assert "no CUDA device is visible" in caplog.text
    monkeypatch.setenv("UNIQ_GPU_REQUIRED", "1")
    with pytest.raises(devices.NoGpuError, match="no CUDA device is visible"):
        devices.acquire_gpu()


def test_env_vars_and_visible_devices(fake_gpus, monkeypatch, tmp_path):
    # Two jobs see different masks of the same host: the physical id names the lock,
    # so the job whose mask is "3" collides with the one whose mask is "1,3".
    fake_gpus(1, visible="3")
    monkeypatch.setenv("UNIQ_JOBS_PER_GPU", "1")
    first = devices.acquire_gpu()
    assert first.device == torch.device("cuda:0") and ".gpu3.slot0." in first.lock_path.name
    fake_gpus(2, visible="1,3")
    second = devices.acquire_gpu()  # kept: a dropped lease is closed and frees its slot
    assert second.device == torch.device("cuda:0") and ".gpu1.slot0." in second.lock_path.name
    assert devices.acquire_gpu().device == torch.device("cpu")  # physical 3 is held above
    monkeypatch.setenv("UNIQ_JOBS_PER_GPU", "zero")
    with pytest.raises(ValueError, match="UNIQ_JOBS_PER_GPU"):
        devices.acquire_gpu()


def test_context_manager_releases(fake_gpus):
    fake_gpus(1)
    with devices.device_for("auto") as device:
        assert device == torch.device("cuda:0")
    with devices.device_for("cpu") as device:
        assert device == torch.device("cpu")
    # After the block the only slot is free again, even with one job per GPU.
    assert devices.acquire_gpu(jobs_per_gpu=1).device == torch.device("cuda:0")


CHILD = textwrap.dedent(
    """
    import json, os, sys, time, types
    # A stand-in torch with one GPU: the lock logic is what is tested, and importing the
    # real torch twice would dominate the test's run time.
    sys.modules["torch"] = types.SimpleNamespace(
        cuda=types.SimpleNamespace(device_count=lambda: 1), device=str
    )
    from uniq import devices
    go = sys.argv[1]
    while not os.path.exists(go):  # start both processes' attempts together
        time.sleep(0.01)
    lease = devices.acquire_gpu(jobs_per_gpu=1)
    print(json.dumps(str(lease.device)), flush=True)
    sys.stdin.readline()  # hold the lease until the parent says so
    """
)


def test_two_processes_compete_for_one_slot(tmp_path, monkeypatch):
    env = {**os.environ, "UNIQ_GPU_LOCK_DIR": str(tmp_path / "locks"), "PYTHONPATH": os.getcwd()}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)
    go.touch()
    got = [json.loads(p.stdout.readline()) for p in procs]
    assert sorted(got) == ["cpu", "cuda:0"]
    # While the winner holds it, this process cannot have it either; once the winner
    # exits, the kernel drops its lock and the slot is free.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lock_dir = Path(env["UNIQ_GPU_LOCK_DIR"])
    assert devices.acquire_gpu(jobs_per_gpu=1, lock_dir=lock_dir).device.type == "cpu"
    for p in procs:
        p.communicate("\n", timeout=30)
    assert devices.acquire_gpu(jobs_per_gpu=1, lock_dir=lock_dir).device == torch.device("cuda:0")
