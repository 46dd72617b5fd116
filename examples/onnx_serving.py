"""Serve a graphdnn model with ONNX Runtime, every name intact (chapter 11's workflow 9).

Train a small DNN on the bundled digits, export it to ONNX (graph inputs ``X``, initializers
``hidden1/kernel``..., values ``dnn/hidden2/Elu:0``...), run it in ONNX Runtime, fetch an intermediate
tensor by its graphdnn name, and compare with compiled PyTorch.
Run: ``python examples/onnx_serving.py`` (seconds, deterministic).
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

import graphdnn as gd
from graphdnn.data import load_digits
from graphdnn.recipes import default_dnn
from graphdnn.runtime import OrtRunner
from graphdnn.train import fit


def main() -> None:
    torch.manual_seed(42)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_digits()
    dnn = default_dnn(64, 10, hidden=(64, 32), decay_steps=None)
    model = dnn.compile()
    fit(model, x_train, y_train, epochs=5, seed=0, progress=False, **dnn.fit_kwargs(model))
    model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dnn.onnx"
        gd.export_onnx(model, path)                              # X -> dnn/outputs/BiasAdd:0
        proto = onnx.load(path)
        print("inputs:", [i.name for i in proto.graph.input], "outputs:", [o.name for o in proto.graph.output])
        print("initializers:", [t.name for t in proto.graph.initializer][:4], "...")
        runner = OrtRunner(path)
        hidden = "dnn/hidden2/Elu:0"                              # any tensor, by its graphdnn name
        got = runner.run({"X": x_test}, outputs=[dnn.output_name, hidden])

    with torch.no_grad():
        logits, h2 = gd.compile(dnn.graph, inputs=["X"], outputs=[dnn.output_name, hidden]).eval()(
            torch.from_numpy(x_test))
    diff = max(float(np.abs(got[dnn.output_name] - logits.numpy()).max()),
               float(np.abs(got[hidden] - h2.numpy()).max()))
    accuracy = float((got[dnn.output_name].argmax(1) == y_test).mean())
    print(f"{hidden} from ONNX Runtime: shape {got[hidden].shape}")
    print(f"onnx_serving: ONNX Runtime accuracy {accuracy:.4f}, max |ort - torch| below 1e-5: {diff < 1e-5}")


if __name__ == "__main__":
    main()
