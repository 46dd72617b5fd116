"""Saves that are atomic as a whole and safe with concurrent writers.

* Two processes (forked from one warm writer, so no re-import per round) save sharded checkpoints
  and export ONNX models with external data to the same paths, released together by a barrier,
  round after round: what is committed always loads whole and equals one writer's model, and no
  file of the other writer is left behind.
* A writer (a forked child) is SIGKILLed before the file-system steps of a save or an export (each
  ``os.open``/``replace``/``fsync``/``unlink``..., each tensor write, ONNX's ``save_model``; all of
  them, or a sample and the last eight) and after random delays: the previous or the new version
  loads completely and consistently (ONNX: the weights are those of the graph the ``.onnx`` file
  declares), and the next save leaves exactly the committed files.
* A full disk (``ENOSPC``) in the middle of a save leaves nothing behind, and files of the older
  layouts load and are replaced cleanly.
"""

from __future__ import annotations

import errno
import gc
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from helpers import same_tensors, saved_values
from onnx import numpy_helper

import graphdnn as gd
from graphdnn import checkpoint, layers
from graphdnn.atomic import GENERATION

SHARD = 70_000


def sharded_model(version: int) -> gd.Graph:
    """About 330 kB in five or more shards; every tensor depends on ``version``."""
    torch.manual_seed(version)
    g = gd.Graph(f"ckpt{version}")
    x = g.placeholder("X", (None, 128))
    h = layers.dense(x, 128, name="d0")  # a column-major kernel
    layers.dense(h, 128, name="d1")
    for i in range(3):
        g.variable(f"w{i}", value=torch.randn(128, 128))
    g.variable("step", value=torch.tensor([version], dtype=torch.int64))
    return g


def onnx_model(version: int) -> tuple[gd.Graph, Any]:
    """Same shapes and names for every version, only the graph's name and the weights differ: an
    ``.onnx`` file beside the wrong weights would load silently without the check below."""
    torch.manual_seed(version)
    g = gd.Graph(f"net{version}")
    h = g.placeholder("X", (None, 128))
    for i in range(3):
        h = layers.dense(h, 128, name=f"d{i}")
    return g, h


def _onnx_reference(version: int) -> dict[str, np.ndarray]:
    g, out = onnx_model(version)
    model = gd.export_onnx(g, None, outputs=[out])
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


class References:
    def __init__(self) -> None:
        self.ckpt = {v: dict(sharded_model(v).values) for v in (1, 2)}
        self.onnx = {v: _onnx_reference(v) for v in (1, 2)}
        assert not same_tensors(self.ckpt[1], self.ckpt[2])

    def checkpoint_version(self, folder: Path) -> int:
        """The version the committed index holds; its shards are exactly the checkpoint's files."""
        index = folder / "m.safetensors.index.json"
        values = saved_values(index)
        found = [v for v, ref in self.ckpt.items() if same_tensors(values, ref)]
        assert len(found) == 1, "the committed checkpoint is neither version"
        return found[0]

    def onnx_version(self, folder: Path) -> int:
        """The version the committed ``.onnx`` declares, after checking that its weights are that
        version's."""
        model = onnx.load(str(folder / "m.onnx"))  # with its external data
        version = int(model.graph.name.removeprefix("net"))
        got = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        ref = self.onnx[version]
        assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref), (
            f"m.onnx declares net{version} but holds other weights")
        return version


@pytest.fixture(scope="module")
def refs() -> References:
    return References()


def _committed_files(folder: Path) -> set[str]:
    """The files the committed index and ``.onnx`` name, with themselves."""
    out = set()
    index = folder / "m.safetensors.index.json"
    if index.exists():
        out |= {index.name, *json.loads(index.read_text())["weight_map"].values()}
    if (folder / "m.onnx").exists():
        model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        out |= {"m.onnx", *(e.value for t in model.graph.initializer for e in t.external_data if e.key == "location")}
    return out


# ------------------------------------------------------------------------------------- killed writers
WRITER = textwrap.dedent('''
    import json, os, random, signal, sys, time, traceback
    import torch
    torch.set_num_threads(1)
    import onnx
    import graphdnn as gd
    from graphdnn import checkpoint
    sys.path.insert(0, sys.argv[1])
    from test_concurrent_saves import SHARD, onnx_model, sharded_model

    MODELS = {v: (sharded_model(v), onnx_model(v)) for v in (1, 2)}
    STEPS = [(os, "open"), (os, "replace"), (os, "fsync"), (os, "chmod"), (os, "unlink"), (os, "listdir"),
             (checkpoint, "_write_tensors"), (onnx, "save_model")]

    def kill_at_step(k):
        """SIGKILL this process right before its k-th file-system step."""
        count = [0]
        for module, name in STEPS:
            def hook(*args, _real=getattr(module, name), **kwargs):
                count[0] += 1
                if count[0] >= k:
                    os.kill(os.getpid(), signal.SIGKILL)
                return _real(*args, **kwargs)
            setattr(module, name, hook)
        return count

    def run(kind, version, folder):
        if kind == "checkpoint":
            gd.save(MODELS[version][0], os.path.join(folder, "m.safetensors"), max_shard_size=SHARD)
        else:
            net, out = MODELS[version][1]
            gd.export_onnx(net, os.path.join(folder, "m.onnx"), outputs=[out], external_data=True)

    def read(folder):
        """Load the checkpoint again and again while the writers run: always one version, whole."""
        refs = [dict(MODELS[v][0].values) for v in (1, 2)]
        for _ in range(8):
            got = dict(gd.load(os.path.join(folder, "m.safetensors.index.json")).values)
            assert any(got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref) for ref in refs)

    def race(seed, folder):
        """Two children, released together, save version 1 and 2 to the same paths; a third reads."""
        r, w = os.pipe()
        pids = []
        roles = [1, 2] + (["read"] if os.path.exists(os.path.join(folder, "m.safetensors.index.json")) else [])
        for role in roles:
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)  # the barrier
                try:
                    if role == "read":
                        read(folder)
                        os._exit(0)
                    time.sleep(random.Random(seed * 2 + role).uniform(0, 0.02))
                    for kind in ("checkpoint", "onnx"):
                        run(kind, role, folder)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            pids.append(pid)
        os.close(r)
        os.write(w, b"go!")
        os.close(w)
        return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]

    for line in sys.stdin:
        mode, value, kind, version, folder = line.split()
        if mode == "race":
            print(json.dumps({"exits": race(int(value), folder), "killed": False, "exit": 0}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            count = kill_at_step(int(value)) if mode == "step" else [0]
            start = time.perf_counter()
            run(kind, int(version), folder)
            done = {"steps": count[0], "seconds": time.perf_counter() - start}
            os.write(1, (json.dumps(done) + "\\n").encode())  # one write: whole even if killed right after
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


class Writer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(Path(__file__).parent)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, kind: str, version: int, folder: Path, mode: str = "step", value: float = 10**9) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{mode} {value} {kind} {version} {folder}\n")
        self.proc.stdin.flush()
        reply: dict = {}
        while "killed" not in reply:
            line = self.proc.stdout.readline()
            assert line, f"the writer died (exit {self.proc.poll()})"
            reply.update(json.loads(line))
        assert reply["killed"] or reply["exit"] == 0, reply
        return reply

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def writer() -> Any:
    w = Writer()
    yield w
    w.close()


ROUNDS = 6


def test_two_processes_saving_to_one_path(refs: References, writer: Writer, tmp_path: Path) -> None:
    """Two writers save (sharded) and export (external data) to the same two paths at once, round after
    round, while a third process loads the checkpoint: what is committed (and whatever the reader
    got) loads whole as one writer's model, and the other's files are gone."""
    seen: dict[str, set[int]] = {"checkpoint": set(), "onnx": set()}
    for i in range(ROUNDS):
        assert set(writer.run("both", 0, tmp_path, "race", i)["exits"]) == {0}
        seen["checkpoint"].add(refs.checkpoint_version(tmp_path))
        seen["onnx"].add(refs.onnx_version(tmp_path))
        assert {p.name for p in tmp_path.iterdir()} == _committed_files(tmp_path)
    assert seen["checkpoint"] <= {1, 2} and seen["onnx"] <= {1, 2}


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_writer_killed_at_every_step(refs: References, writer: Writer, tmp_path: Path, kind: str) -> None:
    version = refs.checkpoint_version if kind == "checkpoint" else refs.onnx_version
    assert writer.run(kind, 1, tmp_path)["exit"] == 0
    calibration = writer.run(kind, 2, tmp_path)  # a full save over a previous one: its steps and duration
    steps, seconds = calibration["steps"], calibration["seconds"]
    assert steps >= 4 and version(tmp_path) == 2
    rng = random.Random(steps)
    # every step up to 16, else 8 drawn from the writing of the shards and the last 8 (index, collection)
    chosen = range(1, steps + 1) if steps <= 16 else sorted(rng.sample(range(1, steps - 7), 8)) + list(
        range(steps - 7, steps + 1))
    points = [("step", k) for k in chosen] + [("time", round(rng.uniform(0, 1.5 * seconds), 6)) for _ in range(4)]
    outcomes = {1: 0, 2: 0}
    for mode, value in points:
        assert writer.run(kind, 1, tmp_path)["exit"] == 0  # the previous version, complete
        assert {p.name for p in tmp_path.iterdir()} == _committed_files(tmp_path), "the next save left an orphan"
        reply = writer.run(kind, 2, tmp_path, mode, value)
        where = f"killed at {mode} {value}"
        assert reply["killed"] or mode == "time", where
        outcomes[version(tmp_path)] += 1
    assert outcomes[1] and outcomes[2], outcomes


# ------------------------------------------------------------------------------------------- failures
def _full_disk_after(calls: int) -> Any:
    count = [0]

    def write(f: Any, tensors: Any, meta: Any) -> None:
        count[0] += 1
        if count[0] > calls:
            f.write(checkpoint._header(tensors, meta))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, tensors, meta)

    real = checkpoint._write_tensors
    return write


def test_full_disk_leaves_no_orphan(refs: References, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gd.save(sharded_model(1), tmp_path / "m.safetensors", max_shard_size=SHARD)
    net, out = onnx_model(1)
    gd.export_onnx(net, tmp_path / "m.onnx", outputs=[out], external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "_write_tensors", _full_disk_after(2))
        with pytest.raises(OSError) as exc:
            gd.save(sharded_model(2), tmp_path / "m.safetensors", max_shard_size=SHARD)
        assert exc.value.errno == errno.ENOSPC

    def partial_save(model: Any, path: str, **kwargs: Any) -> None:
        Path(path).write_bytes(b"\x08\x07")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(onnx, "save_model", partial_save)
        net2, out2 = onnx_model(2)
        with pytest.raises(OSError):
            gd.export_onnx(net2, tmp_path / "m.onnx", outputs=[out2], external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert refs.checkpoint_version(tmp_path) == 1 and refs.onnx_version(tmp_path) == 1
    gd.save(sharded_model(2), tmp_path / "m.safetensors", max_shard_size=SHARD)
    gd.export_onnx(net2, tmp_path / "m.onnx", outputs=[out2], external_data=True)
    assert refs.checkpoint_version(tmp_path) == 2 and refs.onnx_version(tmp_path) == 2
    assert {p.name for p in tmp_path.iterdir()} == _committed_files(tmp_path)


def _to_older_names(index: Path, stem: str) -> set[str]:
    """Rename a checkpoint's shards to the names older versions wrote (``<stem>-00001-of-0000N``, one
    with the ``-b`` suffix of the alternate set) and rewrite its index; returns its files."""
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()))
    rename = {s: f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors" for i, s in enumerate(shards, 1)}
    rename[shards[0]] = rename[shards[0]].replace(".safetensors", "-b.safetensors")
    for old, new in rename.items():
        (index.parent / old).rename(index.parent / new)
    doc["weight_map"] = {k: rename[v] for k, v in doc["weight_map"].items()}
    index.write_text(json.dumps(doc))
    return {index.name, *rename.values()}


def test_older_layouts_load_and_are_replaced(refs: References, tmp_path: Path) -> None:
    """Shards named ``m-00001-of-0000N[-b]`` and ``m.onnx.data`` (older versions) load, and the next save
    removes them; files of another checkpoint whose name extends this one's are left alone."""
    old_files = _to_older_names(gd.save(sharded_model(1), tmp_path / "m.safetensors", max_shard_size=SHARD), "m")
    assert refs.checkpoint_version(tmp_path) == 1
    net, out = onnx_model(1)
    onnx.save_model(gd.export_onnx(net, None, outputs=[out]), str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="m.onnx.data", size_threshold=1024)
    assert refs.onnx_version(tmp_path) == 1
    stem = "m-0123456789ab"  # its shards look like a generation of "m"
    assert re.fullmatch(GENERATION, stem[2:])
    other = gd.save(sharded_model(2), tmp_path / f"{stem}.safetensors", max_shard_size=SHARD)
    other_files = _to_older_names(other, stem)

    gd.save(sharded_model(2), tmp_path / "m.safetensors", max_shard_size=SHARD)
    net2, out2 = onnx_model(2)
    gd.export_onnx(net2, tmp_path / "m.onnx", outputs=[out2], external_data=True)
    assert refs.checkpoint_version(tmp_path) == 2 and refs.onnx_version(tmp_path) == 2
    files = {p.name for p in tmp_path.iterdir()}
    assert files == _committed_files(tmp_path) | other_files and not (old_files - {"m.safetensors.index.json"}) & files
    assert "m.onnx.data" not in files
    assert same_tensors(saved_values(other), refs.ckpt[2])


def test_cache_folders_of_finished_programs_are_removed(tmp_path: Path) -> None:
    """Memory-mapped caches live in a locked private folder: a folder nobody holds (a killed or finished
    program's) goes when the next cache is made there; one that a live dataset holds stays."""
    g = gd.Graph("cached")
    x = g.placeholder("X", (None, 4))
    out = layers.dense(layers.dense(x, 3, name="hidden"), 2, name="out")
    model = gd.compile(g, inputs=["X"], outputs=[out])
    gd.freeze(model, "hidden")
    data = torch.randn(10, 4)
    dead = tmp_path / "graphdnn-cache-deadbeef"
    dead.mkdir()
    (dead / "frontier_0.bin").write_bytes(b"\0" * 8)
    first = gd.cache_frozen(model, data, memory_limit=0, directory=tmp_path, progress=False)
    live = first.dataset.directory
    assert live is not None and not dead.exists()
    second = gd.cache_frozen(model, data, memory_limit=0, directory=tmp_path, progress=False)
    assert live.exists() and second.dataset.directory != live  # the first dataset still holds its folder
    torch.testing.assert_close(second.dataset.tensors[0], first.dataset.tensors[0], rtol=0, atol=0)
    del first
    gc.collect()
    gd.cache_frozen(model, data, memory_limit=0, directory=tmp_path, progress=False)
    assert not live.exists() and second.dataset.directory.exists()
