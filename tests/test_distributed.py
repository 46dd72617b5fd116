"""Data-parallel ``fit`` on 2 CPU processes (gloo over 127.0.0.1) against single-process training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _distributed_worker import EPOCHS, FROZEN, build_graph, compile_model, train
from safetensors.torch import load_file, save_file

import graphdnn as gd
from graphdnn.train import distributed

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for a rank, on the loopback interface only."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
               WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_ranks(args: list[str], world: int = 2) -> None:
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args], env=_rank_env(r, world, port), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s")
    for r, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{out[-4000:]}"


def test_two_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    graph = build_graph()
    gd.save(graph, tmp_path / "init.safetensors")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(101, 6, generator=gen)
    y = torch.randint(0, 3, (101,), generator=gen)
    save_file({"x": x, "y": y}, tmp_path / "data.safetensors")

    _run_ranks([str(WORKER), str(tmp_path)])

    # reference: this process alone, same initial values, same global batches
    ref_model = compile_model(gd.load(tmp_path / "init.safetensors"))
    ref_history = train(ref_model, x, y)
    reference = {k: v.detach() for k, v in ref_model.graph_state_dict().items()}
    initial = gd.load(tmp_path / "init.safetensors").values

    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert set(ranks[0]) == set(reference)
    for name, expected in reference.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
        torch.testing.assert_close(ranks[0][name], expected, atol=1e-5, rtol=0, msg=name)
        if name.startswith(FROZEN):
            assert torch.equal(ranks[0][name], initial[name]), f"frozen {name} changed"
        else:
            assert not torch.equal(ranks[0][name], initial[name]), f"{name} did not train"
    assert all(log["agree"] for log in logs)
    for key in ("loss", "accuracy"):  # epoch logs are reduced over ranks: the global means
        for log in logs:
            assert log["history"][key] == pytest.approx(ref_history.history[key], abs=1e-5)

    # rank 0 alone saved the sharded checkpoint, and it holds the trained values
    assert [len(log["saved"]) for log in logs] == [1, 0]
    index = Path(logs[0]["saved"][0])
    assert index.name.endswith(".safetensors.index.json") and len(list(index.parent.glob("*-of-*"))) > 1
    restored = gd.load(index).values
    for name in reference:
        assert torch.equal(restored[name], ranks[0][name]), name
    assert len(ref_history.epochs) == EPOCHS


def test_global_batch_sampler_partitions_every_global_batch() -> None:
    shares = [list(distributed.GlobalBatchSampler(11, 4, shuffle=True, generator=torch.Generator().manual_seed(1),
                                                  rank=r, world_size=3)) for r in range(3)]
    order = torch.randperm(11, generator=torch.Generator().manual_seed(1)).tolist()
    for step, start in enumerate(range(0, 11, 4)):
        merged = [i for r in range(3) for i in shares[r][step]]
        assert merged == order[start : start + 4]
    assert [len(s[-1]) for s in shares] == [1, 1, 1]


def test_fit_outside_a_process_group_refuses_distributed_true() -> None:
    model = compile_model(build_graph())
    with pytest.raises(RuntimeError, match="torchrun"):
        train(model, torch.randn(8, 6), torch.zeros(8, dtype=torch.int64), distributed=True)


def test_unused_parameters_behind_stop_gradient() -> None:
    from graphdnn.surgery import stop_gradient_after

    graph = build_graph()
    model = gd.compile(graph, inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"])
    assert distributed.unused_parameters(model) == []
    stop_gradient_after(graph, "dnn/hidden2/Tanh:0")
    model = gd.compile(graph, inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"])
    assert distributed.unused_parameters(model) == ["hidden1.bias", "hidden1.kernel", "hidden2.bias",
                                                     "hidden2.kernel"]
