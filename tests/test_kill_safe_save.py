"""Kill-safe saves: a writer killed by SIGKILL at many points of ``graphdnn.save`` (a multi-MB model,
single file and sharded) leaves the previous checkpoint intact byte for byte, and the new one
complete or absent.

A writer subprocess imports graphdnn once, then forks one child per kill point. The child saves; it
is killed either by its parent after a random delay (asynchronous: mid-``write``, mid-``rename``...)
or by itself at the k-th executed line of ``graphdnn/checkpoint.py`` (deterministic: every step of
the save, ``mkstemp`` to ``os.replace`` to stale-shard removal)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import same_tensors, saved_values

import graphdnn as gd

WRITER = textwrap.dedent('''
    import json, os, signal, sys, time
    import torch
    torch.set_num_threads(1)
    import graphdnn as gd
    from graphdnn import checkpoint

    def model(seed):
        torch.manual_seed(seed)
        g = gd.Graph("big")
        g.variable("dnn/hidden1/kernel", value=torch.randn(1024, 1024))        # 4 MiB
        g.variable("dnn/hidden2/kernel", value=torch.randn(512, 512))          # 1 MiB
        g.variable("dnn/hidden2/bias", value=torch.randn(512, dtype=torch.float64))
        g.variable("steps", value=torch.tensor([seed], dtype=torch.int64))
        for i in range(20):
            g.variable(f"small/v{i}", value=torch.randn(7, i + 1))
        return g

    GRAPHS = {1: model(1), 2: model(2)}

    def kill_at_line(k):
        count = [0]
        def local(frame, event, arg):
            if event == "line":
                count[0] += 1
                if count[0] >= k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return local
        sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename == checkpoint.__file__ else None)
        return count

    def save(version, path, shard):
        return gd.save(GRAPHS[version], path, **({} if shard == "-" else {"max_shard_size": int(shard)}))

    def calibrate(shard, folder):  # a save over an existing checkpoint: lines executed, seconds taken
        path = os.path.join(folder, "calibrate.safetensors")
        save(1, path, shard)
        count = kill_at_line(10**12)
        start = time.perf_counter()
        save(2, path, shard)
        seconds = time.perf_counter() - start
        sys.settrace(None)
        return {"lines": count[0], "seconds": seconds}

    folder = sys.argv[1]
    print(json.dumps({"single": calibrate("-", folder), "sharded": calibrate(sys.argv[2], folder)}), flush=True)
    for line in sys.stdin:
        mode, value, path, version, shard = line.split()
        pid = os.fork()
        if pid == 0:
            if mode == "line":
                kill_at_line(int(value))
            save(int(version), path, shard)
            sys.settrace(None)
            os._exit(0)
        if mode == "time":
            time.sleep(float(value))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps({"killed": killed, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}),
              flush=True)
''')
SHARD = 2 * 2**20
POINTS = 40  # per kind (line / time) and layout (single / sharded)


class Writer:
    """The writer subprocess: ``save(...)`` runs one save in a forked child, killed as asked."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(SHARD)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.calibration = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the writer died (exit {self.proc.poll()})"
        return json.loads(line)

    def save(self, path: Path, version: int, *, sharded: bool, mode: str = "none", value: float = 0) -> bool:
        """Save model ``version`` to ``path``; True when the child was killed before it finished."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{mode} {value} {path} {version} {SHARD if sharded else '-'}\n")
        self.proc.stdin.flush()
        reply = self._reply()
        assert reply["killed"] or reply["exit"] == 0, reply
        return bool(reply["killed"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Writer]:
    w = Writer(tmp_path_factory.mktemp("calibrate"))
    yield w
    w.close()


def _points(writer: Writer, layout: str, seed: int) -> list[tuple[str, float]]:
    """Kill points: line numbers spread over the whole save, and delays up to twice its duration."""
    rng = random.Random(seed)
    lines, seconds = writer.calibration[layout]["lines"], writer.calibration[layout]["seconds"]
    assert lines > 10
    by_line = sorted({1, lines, *(rng.randint(1, lines) for _ in range(POINTS - 2))})
    by_time = [rng.uniform(0, 2 * seconds) for _ in range(POINTS)]
    return [("line", k) for k in by_line] + [("time", round(t, 6)) for t in by_time]


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Files other than the checkpoint's own: only a killed writer's temporary files are allowed."""
    return [p.name for p in folder.iterdir() if p.name not in keep and not (p.name.startswith(".")
                                                                            and p.name.endswith(".tmp"))]


def test_killed_single_file_save(writer: Writer, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    assert not writer.save(ref / "old.safetensors", 1, sharded=False)
    assert not writer.save(ref / "new.safetensors", 2, sharded=False)
    old, new = (ref / "old.safetensors").read_bytes(), (ref / "new.safetensors").read_bytes()
    assert len(new) > 5 * 2**20 and old != new
    new_values = saved_values(ref / "new.safetensors")
    outcomes = {"previous kept": 0, "new complete": 0, "absent": 0}
    killed = 0
    for i, (mode, value) in enumerate(_points(writer, "single", seed=1)):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        target = folder / "m.safetensors"
        replacing = i % 3 != 2  # two points in three overwrite a previous checkpoint, one writes a new file
        if replacing:
            target.write_bytes(old)
        killed += writer.save(target, 2, sharded=False, mode=mode, value=value)
        where = f"kill point {mode}={value}"
        assert not _leftovers(folder, {"m.safetensors"}), where
        if not target.exists():
            assert not replacing, f"{where}: the previous checkpoint is gone"
            outcomes["absent"] += 1
            continue
        data = target.read_bytes()
        if data == new:
            outcomes["new complete"] += 1
            assert same_tensors(saved_values(target), new_values), where
        else:
            assert replacing and data == old, f"{where}: the file is neither the previous checkpoint nor the new one"
            outcomes["previous kept"] += 1
    assert killed >= POINTS // 2  # the kills really happened during saves
    assert outcomes["previous kept"] and outcomes["new complete"] and outcomes["absent"], outcomes


def test_killed_sharded_save(writer: Writer, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    (ref / "old").mkdir(parents=True)
    (ref / "new").mkdir()
    old_index = ref / "old" / "m.safetensors.index.json"
    assert not writer.save(ref / "old" / "m.safetensors", 1, sharded=True)
    assert not writer.save(ref / "new" / "m.safetensors", 2, sharded=True)
    old_files = {p.name: p.read_bytes() for p in (ref / "old").iterdir()}
    assert len(old_files) > 3  # an index and several shards
    old_values, new_values = saved_values(old_index), saved_values(ref / "new" / "m.safetensors.index.json")
    outcomes = {"previous kept": 0, "new complete": 0}
    killed = 0
    for i, (mode, value) in enumerate(_points(writer, "sharded", seed=2)):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        for name, data in old_files.items():
            (folder / name).write_bytes(data)
        index = folder / "m.safetensors.index.json"
        killed += writer.save(folder / "m.safetensors", 2, sharded=True, mode=mode, value=value)
        where = f"kill point {mode}={value}"
        assert index.exists(), f"{where}: the index is gone"
        shards = set(json.loads(index.read_text())["weight_map"].values())
        if index.read_bytes() == old_files[index.name]:
            assert all((folder / s).read_bytes() == old_files[s] for s in shards), f"{where}: a shard changed"
            assert same_tensors(saved_values(index), old_values), where
            outcomes["previous kept"] += 1
        else:
            assert same_tensors(saved_values(index), new_values), f"{where}: the new index does not load the new values"
            outcomes["new complete"] += 1
        names = {p.name for p in folder.iterdir()}
        assert not _leftovers(folder, names & (set(old_files) | shards | {index.name}) | {
            n for n in names if n.startswith("m-") and n.endswith(".safetensors")}), where
    assert killed >= POINTS // 2
    assert outcomes["previous kept"] and outcomes["new complete"], outcomes


def test_repeated_sharded_saves_write_new_shard_names(tmp_path: Path) -> None:
    """Saving over a sharded checkpoint never rewrites the shards the current index names."""
    g = gd.Graph("g")
    for i in range(4):
        g.variable(f"v{i}", value=torch.full((64,), float(i)))
    seen = []
    for _ in range(3):
        index = gd.save(g, tmp_path / "m.safetensors", max_shard_size=256)
        shards = set(json.loads(index.read_text())["weight_map"].values())
        assert not seen or not shards & seen[-1]
        assert sorted(p.name for p in tmp_path.glob("m-*")) == sorted(shards)  # the previous set is removed
        assert same_tensors(saved_values(index), dict(g.values))
        seen.append(shards)
    assert not seen[0] & seen[2]  # every save writes a new generation of shards
