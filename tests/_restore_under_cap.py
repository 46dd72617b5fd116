"""Run by ``tests/test_sharded_restore.py`` in a fresh process: restore a checkpoint into a graph
whose values are already allocated, with the address space capped at (the process as measured just
before) + ``headroom`` bytes. Prints one JSON line: per-tensor SHA-256 of the restored values, or
the error, plus the peak RSS."""

from __future__ import annotations

import hashlib
import json
import resource
import sys

import torch

import graphdnn as gd


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _attempt(path: str, target: gd.Graph, cap: int | None) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if cap is not None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        gd.restore(target, path)
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure is the answer here
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _digests(graph: gd.Graph) -> dict[str, str]:
    return {name: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()
            for name, t in graph.values.items()}


def main(sharded: str, single: str, shapes_json: str, headroom: int) -> None:
    torch.set_num_threads(1)
    target = gd.Graph()
    for name, shape in json.loads(shapes_json).items():
        target.variable(name, value=torch.zeros(shape), scoped=False)
    warm = gd.Graph()  # load every code path (safetensors, restore) before measuring
    warm.variable("w", value=torch.zeros(4), scoped=False)
    gd.save(warm, sharded + ".warm.safetensors")
    gd.restore(warm, sharded + ".warm.safetensors")
    cap = _vm_size() + headroom
    result: dict[str, object] = {"cap_over_baseline": headroom}
    result["single_capped"] = _attempt(single, target, cap)
    result["sharded_capped"] = _attempt(sharded, target, cap)
    result["digests"] = _digests(target) if result["sharded_capped"]["ok"] else {}  # type: ignore[index]
    result["single_uncapped"] = _attempt(single, target, None)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
