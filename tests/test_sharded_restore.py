"""Restoring a sharded checkpoint streams shard by shard: it fits under an address-space cap that
restoring the same tensors from one whole file exceeds. The restored values are checked against
plain ``safetensors`` reads of the shards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import graphdnn as gd
from graphdnn.checkpoint import TensorFile

HELPER = Path(__file__).with_name("_restore_under_cap.py")
COUNT, ROWS, COLS = 8, 1024, 4096  # 8 variables of 16 MiB: 128 MiB in all
MIB = 2**20

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def _source_graph() -> gd.Graph:
    g = gd.Graph()
    gen = torch.Generator().manual_seed(0)
    for i in range(COUNT):
        g.variable(f"layer{i}/kernel", value=torch.randn(ROWS, COLS, generator=gen), scoped=False)
    return g


def test_sharded_restore_stays_under_a_cap_that_a_whole_file_restore_exceeds(tmp_path: Path) -> None:
    graph = _source_graph()
    single = gd.save(graph, tmp_path / "whole.safetensors")
    index = gd.save(graph, tmp_path / "sharded.safetensors", max_shard_size=ROWS * COLS * 4)
    shards = sorted(tmp_path.glob("sharded-*-of-*.safetensors"))
    assert len(shards) == COUNT and index.name == "sharded.safetensors.index.json"
    shard_bytes = max(p.stat().st_size for p in shards)
    total = sum(p.stat().st_size for p in shards)
    del graph

    # Room for a few shards' worth of maps and transients (a 16 MiB-shard restore needs about
    # 50 MiB over the baseline), far less than the 128 MiB that mapping the whole file takes.
    headroom = 4 * shard_bytes + 8 * MIB
    assert headroom < total - 48 * MIB
    shapes = {f"layer{i}/kernel": [ROWS, COLS] for i in range(COUNT)}
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(HELPER), str(index), str(single), json.dumps(shapes), str(headroom)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert not result["single_capped"]["ok"], "the cap is too loose: a whole-file restore fit under it"
    assert result["single_uncapped"]["ok"], result["single_uncapped"]  # so the cap, not the file, failed it
    assert result["sharded_capped"]["ok"], result["sharded_capped"]

    expected = {}  # independent reference: plain safetensors, shard by shard
    for shard in shards:
        for name, tensor in load_file(shard).items():
            expected[name] = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
    assert result["digests"] == expected


def test_restore_reads_one_shard_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the selected tensors are read, and each shard is opened once, then closed."""
    import safetensors

    g = gd.Graph()
    for i in range(4):
        g.variable(f"hidden{i}/kernel", value=torch.full((8, 8), float(i)), scoped=False)
    index = gd.save(g, tmp_path / "m.safetensors", max_shard_size=8 * 8 * 4)
    target = gd.Graph()
    for i in range(4):
        target.variable(f"hidden{i}/kernel", value=torch.zeros(8, 8), scoped=False)

    events: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, path: str, **kwargs: object) -> None:
            self.name, self.inner = Path(path).name, real(path, **kwargs)

        def __enter__(self) -> Spy:
            events.append(f"open {self.name}")
            self.inner.__enter__()
            return self

        def get_tensor(self, key: str) -> torch.Tensor:
            events.append(f"read {key}")
            return self.inner.get_tensor(key)

        def __exit__(self, *exc: object) -> None:
            events.append(f"close {self.name}")
            self.inner.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    report = gd.restore(target, index, include="hidden[12]", strict=False)
    assert sorted(report.matched) == ["hidden1/kernel", "hidden2/kernel"]
    names = {n: s for n, s in TensorFile(index).infos.items()}
    s1, s2 = names["hidden1/kernel"].path.name, names["hidden2/kernel"].path.name
    assert events == [f"open {s1}", "read hidden1/kernel", f"close {s1}",
                      f"open {s2}", "read hidden2/kernel", f"close {s2}"]
    assert torch.equal(target.values["hidden2/kernel"], torch.full((8, 8), 2.0))
    assert torch.equal(target.values["hidden0/kernel"], torch.zeros(8, 8))
