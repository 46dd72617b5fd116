"""Fine-tune an imported ONNX model (weights from another framework, chapter 11's workflows 5 and 7).

A "pretrained" model comes as ONNX with the names another exporter gives (``fc1.weight``,
``/fc1/Gemm``, ``/relu1/Relu_output_0``): here a PyTorch MLP trained on digits 0-4, written with
``onnx.helper``. graphdnn imports it with those names, takes the hidden ``/relu1/Relu_output_0`` value by
name, adds a new 10-class head, freezes the imported layer and trains on all ten digits; then exports
the result to ONNX again and checks ONNX Runtime against PyTorch.
Run: ``python examples/finetune_onnx.py`` (seconds, deterministic).
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.data import load_digits
from graphdnn.runtime import OrtRunner
from graphdnn.train import evaluate, fit


def pretrained_onnx(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Train a torch MLP on digits 0-4 and write it as ONNX, named the way torch's exporter names things."""
    net = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 5))
    mask = y < 5
    xs, ys = torch.from_numpy(x[mask]), torch.from_numpy(y[mask])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    inits = [numpy_helper.from_array(w["0.weight"], "fc1.weight"), numpy_helper.from_array(w["0.bias"], "fc1.bias"),
             numpy_helper.from_array(w["2.weight"], "fc2.weight"), numpy_helper.from_array(w["2.bias"], "fc2.bias")]
    nodes = [helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"], "/fc1/Gemm",
                              transB=1),
             helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu1/Relu_output_0"], "/relu1/Relu"),
             helper.make_node("Gemm", ["/relu1/Relu_output_0", "fc2.weight", "fc2.bias"], ["logits"], "/fc2/Gemm",
                              transB=1)]
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def main() -> None:
    torch.manual_seed(42)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "pretrained.onnx", Path(tmp) / "finetuned.onnx"
        pretrained_onnx(src, x_train, y_train)

        g = load_onnx(src)                                       # the foreign names are kept
        print("imported variables:", [v.name for v in g.variables()])
        hidden = g.get_tensor("/relu1/Relu_output_0")            # an ONNX value name works as a tensor name
        with g.name_scope("new"):
            logits = layers.dense(nn.relu(layers.dense(hidden, 32, name="new_hidden")), 10, name="new_outputs")
        frozen = gd.freeze(g, r"fc1\.")                          # keep the imported features
        before = {n: g.values[n].detach().clone() for n in frozen}
        model = gd.compile(g, inputs=["input"], outputs=[logits])
        fit(model, x_train, y_train, epochs=12, optimizer="adam", lr=0.01, seed=0, progress=False)
        accuracy = evaluate(model, x_test, y_test)["accuracy"]
        unchanged = all(torch.equal(before[n], g.values[n]) for n in frozen)

        gd.export_onnx(model.eval(), dst)
        got = OrtRunner(dst).run({"input": x_test})
        (ort_logits,) = got.values()
        with torch.no_grad():
            torch_logits = model(torch.from_numpy(x_test)).numpy()
        agree = bool(np.abs(ort_logits - torch_logits).max() < 1e-5)
    print(f"finetune_onnx: accuracy on all 10 digits {accuracy:.4f}, imported fc1 unchanged: {unchanged}, "
          f"ONNX Runtime agrees: {agree}")


if __name__ == "__main__":
    main()
