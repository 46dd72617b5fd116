"""Regenerate ``_descriptor.py`` from ``tf_wire.proto`` (development only; needs ``pip install grpcio-tools``).

    python converters/tf_protos/generate.py            # compile the schema
    python converters/tf_protos/generate.py --audit    # and, where TensorFlow is installed, check every
                                                       # field's number, name, type and repetition against TF's

protoc compiles the schema to a serialized ``FileDescriptorProto`` that ``_descriptor.py`` embeds;
``graphdnn.converters.tf_protos`` builds the message classes from it at import time in a private descriptor pool.
Embedding the descriptor rather than protoc's ``_pb2.py`` code keeps the classes independent of the
protoc/runtime version pairing (``_pb2.py`` modules check that the protobuf runtime is at least as new
as the protoc that wrote them) and of TensorFlow's own ``tensorflow.*`` messages in the default pool.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tf_wire.desc"
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={HERE}",
                        f"--descriptor_set_out={out}", "tf_wire.proto"], check=True)
        from google.protobuf import descriptor_pb2

        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        (proto,) = files
        data = proto.SerializeToString(deterministic=True)
    lines, start = [], 0
    while start < len(data):  # chunks whose literal fits a 120-column line
        end = start + 1
        while end < len(data) and len(repr(data[start:end + 1])) <= 110:
            end += 1
        lines.append(data[start:end])
        start = end
    body = "\n".join(f"    {chunk!r}" for chunk in lines)
    (HERE / "_descriptor.py").write_text(
        '"""The serialized ``FileDescriptorProto`` of ``tf_wire.proto``, by ``generate.py``; do not edit."""\n\n'
        f"SERIALIZED = (\n{body}\n)\n"
    )
    print(f"wrote {HERE / '_descriptor.py'} ({len(data)} bytes of descriptor)")


# our message -> TF's, where the names differ (nested here, top-level in TF)
_TF_NAMES = {"ObjectReference": "TrackableObjectGraph.TrackableObject.ObjectReference", "Any": "google.protobuf.Any",
             "SavedObject.UserObject": "SavedUserObject", "SavedObject.Asset": "SavedAsset",
             "SavedObject.Function": "SavedFunction", "SavedObject.BareConcreteFunction": "SavedBareConcreteFunction",
             "SavedObject.Constant": "SavedConstant", "SavedObject.Resource": "SavedResource",
             "SavedObject.CapturedTensor": "CapturedTensor"}


def audit() -> int:
    """Compare every declared field with TensorFlow's descriptors; returns the number of mismatches."""
    sys.path.insert(0, str(HERE.parents[1]))
    from google.protobuf import descriptor_pool
    from google.protobuf.descriptor import FieldDescriptor
    from graphdnn.converters.tf_protos import POOL
    from tensorflow.core.framework import function_pb2, variable_pb2  # noqa: F401  (registers TF's messages)
    from tensorflow.core.protobuf import (  # noqa: F401
        meta_graph_pb2,
        saved_model_pb2,
        saved_object_graph_pb2,
        tensor_bundle_pb2,
        trackable_object_graph_pb2,
    )

    tf_pool, bad, checked = descriptor_pool.Default(), 0, 0

    def walk(ours: Any) -> None:
        nonlocal bad, checked
        rel = ours.full_name[len("graphdnn.tf."):]
        if not ours.GetOptions().map_entry:
            name = _TF_NAMES.get(rel, rel)
            theirs = tf_pool.FindMessageTypeByName(name if name.startswith("google.") else "tensorflow." + name)
            for f in ours.fields:
                g = theirs.fields_by_number.get(f.number)
                checked += 1
                same_type = g is not None and (g.type == f.type or (g.type == FieldDescriptor.TYPE_ENUM
                                                                    and f.type == FieldDescriptor.TYPE_INT32))
                if g is None or g.name != f.name or not same_type or _repeated(g) != _repeated(f):
                    bad += 1
                    print(f"mismatch: {rel}.{f.name} = {f.number}; TensorFlow has {g and g.name}")
        for nested in ours.nested_types:
            walk(nested)

    for message in POOL.FindFileByName("tf_wire.proto").message_types_by_name.values():
        walk(message)
    print(f"audited {checked} fields against TensorFlow's descriptors: {bad} mismatch(es)")
    return bad


def _repeated(field: Any) -> bool:
    value = getattr(field, "is_repeated", None)
    return bool(value) if value is not None else field.label == field.LABEL_REPEATED


if __name__ == "__main__":
    main()
    if "--audit" in sys.argv[1:]:
        sys.exit(1 if audit() else 0)
