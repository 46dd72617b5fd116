from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

#: Test files the low-end CI job runs (the lowest dependency versions pyproject.toml allows): reading,
#: converting and writing files, where the versions of onnx, onnxruntime, numpy, h5py and safetensors matter.
LOW_END_FILES = {
    "test_checkpoint.py",
    "test_cli.py",
    "test_concurrent_saves.py",
    "test_foreign_reuse.py",
    "test_fuzz_loaders.py",
    "test_keras_applications.py",
    "test_keras_import.py",
    "test_kill_safe_save.py",
    "test_load_budget.py",
    "test_named_tensors.py",
    "test_onnx_control_flow.py",
    "test_onnx_export.py",
    "test_onnx_import.py",
    "test_onnx_sequence_io.py",
    "test_restore.py",
    "test_sharded_restore.py",
    "test_signatures.py",
    "test_tf_checkpoint.py",
    "test_tf_import.py",
    "test_tf_proto.py",
    "test_untrusted_files.py",
    "test_untrusted_names.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).name in LOW_END_FILES:
            item.add_marker(pytest.mark.lowend)
