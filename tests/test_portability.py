"""The committed demonstrators roll out into the committed bytes on this machine (CI runs it
on whatever x86-64 machine it gets), and the pins behind that (uniq/numerics.py) hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from uniq import numerics


def _fingerprint(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # A fresh process: the pins must be set before numpy and torch load, as in a workflow job.
    return subprocess.run(
        [sys.executable, "-m", "uniq", "fingerprint", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )  # fmt: skip


def test_committed_demonstrators_roll_out_into_the_committed_bytes():
    proc = _fingerprint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DIFFERS" not in proc.stdout


def test_a_missing_fingerprint_file_is_named_before_any_rollout(tmp_path):
    proc = _fingerprint("--file", str(tmp_path / "none.json"))
    assert proc.returncode == 2
    assert "none.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_changed_fingerprint_is_named(tmp_path):
    from envs.fingerprints import FINGERPRINT_FILE

    record = json.loads(FINGERPRINT_FILE.read_text())
    key = sorted(record["fingerprints"])[0]
    record["fingerprints"][key] = "0" * 64
    tampered = tmp_path / "fingerprints.json"
    tampered.write_text(json.dumps(record))
    proc = _fingerprint("--file", str(tampered))
    assert proc.returncode == 1
    assert f"{key}" in proc.stdout and "DIFFERS" in proc.stdout
    assert "1 of" in proc.stderr


def test_numpy_is_pinned_in_this_process():
    # conftest imports uniq first; without that numpy would keep its AVX-512 loops here.
    assert numerics.status()["numpy"]


@pytest.mark.parametrize(
    "flags, user, expected",
    [
        ({"avx2", "fma"}, "", None),  # an AVX2 machine: nothing to disable, no warning
        ({"avx2", "avx512f", "avx512cd"}, "", "AVX512F AVX512CD"),
        ({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}, "AVX2",
         "AVX2 AVX512F AVX512CD AVX512_SKX"),
        # inherited from an AVX-512 node by a job on an AVX2 node: nothing left to disable
        ({"avx2", "fma"}, "AVX512F AVX512CD AVX512_SKX", ""),
    ],
)  # fmt: skip
def test_pin_numpy_names_only_the_groups_this_cpu_has(monkeypatch, flags, user, expected):
    monkeypatch.setattr(numerics, "_cpu_flags", lambda: flags)
    monkeypatch.delitem(sys.modules, "numpy")  # pin_numpy is a no-op once numpy is loaded
    monkeypatch.setenv("NPY_DISABLE_CPU_FEATURES", user)
    monkeypatch.delenv(numerics.OFF, raising=False)
    numerics.pin_numpy()
    assert os.environ.get("NPY_DISABLE_CPU_FEATURES") == (user if expected is None else expected)


def test_pins_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(numerics.OFF, "0")
    monkeypatch.delenv("MKL_CBWR", raising=False)
    numerics.pin_torch()
    assert "MKL_CBWR" not in os.environ
