"""``graphdnn.summary`` (the Keras-style table) and ``graphdnn.draw`` (SVG/PNG pictures of a graph)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from helpers import frozen_book_dnn

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.draw import draw, render_png, render_svg, scope_graph
from graphdnn.summary import summary, summary_data, variable_records, variable_tree

SVG = "{http://www.w3.org/2000/svg}"


def _resnet_like(blocks: int = 4) -> gd.Graph:
    """A small residual conv net whose scopes look like ResNet's (stage/block/conv)."""
    g = gd.Graph("resnet")
    x = g.placeholder("images", (None, 3, 16, 16))
    with g.name_scope("stem"):
        h = nn.relu(layers.conv2d(x, 8, 3, padding="same", name="conv1"))
    for stage in (1, 2):
        with g.name_scope(f"stage{stage}"):
            for b in range(blocks // 2):
                with g.name_scope(f"block{b}"):
                    y = nn.relu(layers.conv2d(h, 8, 3, padding="same", name=f"s{stage}b{b}conv1"))
                    y = layers.conv2d(y, 8, 3, padding="same", name=f"s{stage}b{b}conv2")
                    h = nn.relu(nn.add(h, y))
    with g.name_scope("head"):
        logits = layers.dense(layers.flatten(layers.global_avg_pool2d(h)), 10, name="fc")
    del logits
    return g


def test_summary_rows_and_totals_of_the_book_dnn() -> None:
    g = frozen_book_dnn()
    data = summary_data(g)
    rows = {r["scope"]: r for r in data["rows"]}
    assert rows["dnn/hidden1"]["params"] == 784 * 300 and rows["dnn/hidden1"]["status"] == "frozen"
    assert rows["dnn/hidden1"]["output_shape"] == "(None, 300)"
    assert rows["dnn/hidden3/batch_normalization"]["status"] == "partly"  # gamma/beta train, moving stats are state
    assert rows["X"]["types"] == ["Placeholder"] and rows["X"]["output_shape"] == "(None, 784)"
    total = sum(v.numel() for v in g.values.values())
    assert sum(r["params"] for r in data["rows"]) == data["totals"]["params"] == total
    frozen = sum(g.values[n].numel() for n in g.values if n.startswith(("hidden1/", "hidden2/")))
    assert data["totals"]["frozen"] == frozen
    text = summary(g)
    assert f"Total params: {total:,}" in text and f"Frozen params: {frozen:,}" in text
    assert "dnn/hidden1 (MatMul, Elu)" in text and "Regularizer" not in text
    collapsed = summary_data(g, depth=1)
    assert [r["scope"] for r in collapsed["rows"]] == ["X", "y", "dnn", "loss", "eval"]


def test_summary_of_a_compiled_module_and_of_a_plain_torch_module() -> None:
    g = frozen_book_dnn()
    model = gd.compile(g, inputs=["X"], outputs=["dnn/hidden2/Elu:0"])
    scopes = [r["scope"] for r in summary_data(model)["rows"]]
    assert scopes == ["X", "dnn/hidden1", "dnn/hidden1/batch_normalization", "dnn/hidden2",
                      "dnn/hidden2/batch_normalization"]
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net[0].weight.requires_grad_(False)
    data = summary_data(net)
    assert data["totals"]["frozen"] == 12 and data["totals"]["trainable"] == 3 + 6
    assert "0 (Linear)" in summary(net)


def test_variable_tree_groups_by_scope() -> None:
    tree = variable_tree(variable_records(frozen_book_dnn()))
    lines = tree.splitlines()
    assert lines[0].startswith("hidden1/") and "frozen" in lines[0]
    assert any(line.strip().startswith("kernel") and "(784, 300)" in line and "235,200" in line for line in lines)


def test_scope_graph_collapses_and_breaks_cycles() -> None:
    g = frozen_book_dnn()
    boxes, edges = scope_graph(g, depth=2)
    assert {"X", "dnn/hidden1", "dnn/hidden2", "dnn/outputs"} <= set(boxes)
    assert boxes["dnn/hidden1"].status == "frozen" and boxes["dnn/hidden3"].status == ""
    assert ("dnn/hidden1", "dnn/hidden2") in edges
    full, full_edges = scope_graph(g)  # every op: batch norm sits inside the layer scope, no cycle anyway
    assert "dnn/hidden1/MatMul" in full
    for bx, ex in ((boxes, edges), (full, full_edges)):
        dag = nx.DiGraph(list(ex))
        dag.add_nodes_from(bx)
        assert nx.is_directed_acyclic_graph(dag)
    # a scope re-entered after another one (a -> b -> a at depth 2) would be a cycle: merged into one box
    h = gd.Graph("reentry")
    x = h.placeholder("X", (None, 4))
    with h.name_scope("net"):
        with h.name_scope("block"):
            y = nn.relu(x, name="first")
        with h.name_scope("side"):
            y = nn.tanh(y)
        with h.name_scope("block"):
            nn.relu(y, name="again")
    merged, merged_edges = scope_graph(h, depth=2)
    assert set(merged) == {"X", "net"} and merged_edges == {("X", "net")}
    assert merged["net"].ops == ["net/block/first", "net/side/Tanh", "net/block/again"]


def test_resnet_like_graph_is_small_at_depth_1_and_2() -> None:
    g = _resnet_like()
    boxes1, _ = scope_graph(g, depth=1)
    assert set(boxes1) == {"images", "stem", "stage1", "stage2", "head"}
    boxes2, _ = scope_graph(g, depth=2)
    assert {"stage1/block0", "stage1/block1", "stage2/block0", "stage2/block1", "stem/conv1", "head/fc"} <= set(boxes2)
    assert len(boxes2) == 10  # + images, stem/Relu, head/flatten, head/global_average_pooling2d
    assert sum(b.params for b in boxes2.values()) == sum(v.numel() for v in g.values.values())


def test_svg_is_valid_xml_with_escaped_names(tmp_path: Path) -> None:
    g = gd.Graph("odd <names> & co")
    x = g.placeholder("in<put>", (None, 4))
    layers.dense(x, 2, name="a&b")
    root = ET.fromstring(render_svg(g))
    assert root.tag == SVG + "svg"
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "in<put>" in texts and any(t and t.startswith("a&b/") for t in texts)
    assert len(list(root.iter(SVG + "path"))) >= 1  # the edge
    path = draw(g, tmp_path / "g.svg")
    assert ET.parse(path).getroot().tag == SVG + "svg"


def test_png_rasterization(tmp_path: Path) -> None:
    g = frozen_book_dnn()
    pixels = render_png(g, depth=2)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    frozen_blue = np.all(pixels == (215, 232, 251), axis=2).sum()
    assert frozen_blue > 1000  # the frozen boxes are filled
    assert (pixels < 60).all(axis=2).sum() > 500  # text and frames are drawn
    path = draw(g, tmp_path / "g.png", depth=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == pixels.shape[1]
    assert int.from_bytes(data[20:24], "big") == pixels.shape[0]
