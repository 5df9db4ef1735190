#!/usr/bin/python3
"""Plain Python peer of `recycle merge --method average`: onnx + numpy, load, average, save.

Usage: python_peer_merge.py OUTPUT.onnx INPUT1.onnx INPUT2.onnx ...

Loads each model with its external data (onnx.load), adds its float initializers into fp32 accumulators, divides
by the model count, writes the result into the first model and saves it with one external-data file beside it.
Models are loaded one at a time, so at most one input is held with the accumulators. Prints JSON: merge_s (wall
clock from before the imports to after the save), cpu_s (user + system) and peak_rss_bytes (ru_maxrss).
"""
import json
import os
import resource
import sys
import time

start = time.perf_counter()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def main(output, inputs):
    template = None
    sums = {}
    for path in inputs:
        model = onnx.load(path)  # load_external_data=True
        for tensor in model.graph.initializer:
            if tensor.data_type not in FLOATS:
                continue
            values = numpy_helper.to_array(tensor).astype(np.float32, copy=False)
            if tensor.name in sums:
                sums[tensor.name] += values
            else:
                sums[tensor.name] = values.copy()
        if template is None:
            template = model
        del model
    for tensor in template.graph.initializer:
        if tensor.name in sums:
            merged = (sums.pop(tensor.name) / len(inputs)).astype(numpy_helper.to_array(tensor).dtype, copy=False)
            tensor.CopyFrom(numpy_helper.from_array(merged, tensor.name))
    onnx.save_model(template, output, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(output) + ".data", size_threshold=1024)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "merge_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }))
