#!/usr/bin/env python3
"""Small ONNX models that reach every place the reader finds tensors, as seeds for scripts/fuzz.sh.

Usage: /usr/bin/python3 scripts/fuzz_seeds.py OUTPUT_FOLDER
External-data seeds name weights.bin, the 4096-byte file the harness (fuzz/Recycling.Fuzz) keeps beside each input.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(nodes, initializers, name, **kwargs):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializers,
                              sparse_initializer=kwargs.pop("sparse", None))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz-seeds", **kwargs)


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    seeds = {"raw.onnx": model([gemm], [w, b], "raw")}

    typed = [
        helper.make_tensor("f32", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.5, 0.0]),
        helper.make_tensor("f16", TensorProto.FLOAT16, [3], np.array([1, -2, 0.5], np.float16).view(np.uint16).tolist()),
        helper.make_tensor("i64", TensorProto.INT64, [2], [-1, 1 << 40]),
        helper.make_tensor("i8", TensorProto.INT8, [3], [-128, 0, 127]),
        helper.make_tensor("f64", TensorProto.DOUBLE, [1], [2.5]),
        helper.make_tensor("u64", TensorProto.UINT64, [2], [1, 1 << 63]),
        helper.make_tensor("c64", TensorProto.COMPLEX64, [1], [complex(1.0, -1.0)]),
        helper.make_tensor("s", TensorProto.STRING, [2], [b"ab", b""]),
        helper.make_tensor("bool", TensorProto.BOOL, [2], [1, 0]),
    ]
    seeds["typed.onnx"] = model([gemm], [w, b] + typed, "typed")

    constant = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "c"))
    then_graph = helper.make_graph([helper.make_node("Identity", ["t"], ["o"])], "then", [],
                                   [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
                                   [numpy_helper.from_array(np.array([1, 2], np.float32), "t")])
    else_graph = helper.make_graph([helper.make_node("Constant", [], ["o"], value_floats=[3.0, 4.0])], "else", [],
                                   [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])])
    branch = helper.make_node("If", ["cond"], ["o"], then_branch=then_graph, else_branch=else_graph)
    seeds["subgraphs.onnx"] = model([constant, branch, gemm], [w, b, numpy_helper.from_array(np.array(True), "cond")], "subgraphs")

    values = numpy_helper.from_array(np.array([5, 6], np.float32), "sparse")
    indices = numpy_helper.from_array(np.array([1, 3], np.int64), "sparse_indices")
    seeds["sparse.onnx"] = model([gemm], [w, b], "sparse", sparse=[helper.make_sparse_tensor(values, indices, [4])])

    external = onnx.TensorProto()
    external.CopyFrom(w)
    external.ClearField("raw_data")
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "1024"), ("length", "64")):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    seeds["external.onnx"] = model([gemm], [external, b], "external")

    function = helper.make_function("local", "Affine", ["a", "m", "c"], ["r"], [helper.make_node("Gemm", ["a", "m", "c"], ["r"], transB=1)],
                                    [helper.make_opsetid("", 17)])
    call = helper.make_node("Affine", ["x", "w", "b"], ["y"], domain="local")
    with_function = model([call], [w, b], "function", functions=[function])
    with_function.opset_import.append(helper.make_opsetid("local", 1))
    training = onnx.TrainingInfoProto()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], [numpy_helper.from_array(np.zeros(2, np.float32), "step")]))
    with_function.training_info.append(training)
    seeds["function.onnx"] = with_function

    for name, proto in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(proto.SerializeToString())
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
