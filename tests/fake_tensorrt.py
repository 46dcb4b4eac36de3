"""A fake ``tensorrt`` module for CPU tests of the engine path, through the seam sadc.runtime.trt_host.

It implements the slice of the TensorRT 10/11 Python API sadc uses. "Building" records
the network flags and builder flags and serialises the parsed ONNX graph with the
optimization profile; "running" executes that graph in ONNX Runtime on CPU memory
addressed by ``data_ptr()`` exactly as TensorRT reads and writes device memory, so
TrtPredictor's real code (shapes, addresses, dtypes, execute_async_v3) runs. The
``EfficientNMS_TRT`` node, which ONNX Runtime cannot run, is emulated from the plugin's
documented behaviour: scores >= score_threshold, per-class NMS (torchvision's
batched_nms), best ``max_output_boxes``, zero-padded.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path

import numpy as np
import onnx
import torch

from sadc.runtime.trt_host import TensorRTHost

MAGIC = b"FAKEPLAN"


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 6


_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT32: np.int32,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 6: DataType.INT32, 2: DataType.UINT8, 7: DataType.INT64}


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class Logger:
    WARNING = 2

    def __init__(self, level=None):
        self.level = level


class _Network:
    def __init__(self, flags: int):
        self.flags = flags
        self.onnx_path: str | None = None


class _Parser:
    def __init__(self, network, logger):
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        self.network.onnx_path = path
        onnx.checker.check_model(onnx.load(path))
        return True

    def get_error(self, i):  # pragma: no cover - parse never fails here
        return ""


class _Cache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data or b"fake-timing-cache"


class _Profile:
    def set_shape(self, name, lo, opt, hi):
        self.shapes = {name: [list(lo), list(opt), list(hi)]}


class _Config:
    def __init__(self):
        self.flags: list = []
        self.profiles: list[_Profile] = []
        self.cache = _Cache(b"")

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        self.flags.append(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        return _Cache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch=False):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class FakeTensorRT:
    """``make_module(version, fp16_flag)`` gives a module object; ``builds`` records every build."""

    def __init__(self, version: str = "10.9.0", *, fp16_flag: bool = True):
        self.builds: list[dict] = []
        module = types.SimpleNamespace()
        module.__version__ = version
        module.Logger = Logger
        module.DataType = DataType
        module.TensorIOMode = TensorIOMode
        module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
        module.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        module.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16"} if fp16_flag else {}), TF32="TF32")
        module.OnnxParser = _Parser
        module.Builder = lambda logger: _Builder(self)
        module.Runtime = lambda logger: _Runtime()
        self.module = module

    def host(self) -> TensorRTHost:
        return TensorRTHost(self.module, torch.device("cpu"), "Fake GPU", "9.0")


class _Builder:
    def __init__(self, fake: FakeTensorRT):
        self.fake = fake

    def create_network(self, flags: int):
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config) -> bytes:
        strongly_typed = bool(network.flags & (1 << 5))
        self.fake.builds.append(
            {"onnx": Path(network.onnx_path).name, "strongly_typed": strongly_typed, "flags": list(config.flags)}
        )
        header = json.dumps({"version": self.fake.module.__version__, "profile": config.profiles[0].shapes}).encode()
        return MAGIC + len(header).to_bytes(4, "little") + header + Path(network.onnx_path).read_bytes()


class _Runtime:
    def deserialize_cuda_engine(self, data: bytes):
        if not data.startswith(MAGIC):
            return None
        n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
        header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + n])
        return _Engine(onnx.load_from_string(data[len(MAGIC) + 4 + n :]), header)


class _Engine:
    def __init__(self, model, header):
        self.model = model
        self.profile = header["profile"]
        graph = model.graph
        self.inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
        self.outputs = list(graph.output)
        self.io = [*self.inputs, *self.outputs]
        self.num_io_tensors = len(self.io)
        self.nms = next((n for n in graph.node if n.op_type == "EfficientNMS_TRT"), None)

    def get_tensor_name(self, i):
        return self.io[i].name

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if any(i.name == name for i in self.inputs) else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        info = next(t for t in self.io if t.name == name)
        return _ONNX[info.type.tensor_type.elem_type]

    def get_tensor_profile_shape(self, name, index):
        return tuple(tuple(s) for s in self.profile[name])

    def create_execution_context(self):
        return _Context(self)


def _array_at(address: int, shape, dtype) -> np.ndarray:
    count = int(np.prod(shape))
    buf = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


class _Context:
    def __init__(self, engine: _Engine):
        import onnxruntime as ort

        self.engine = engine
        model = engine.model
        if engine.nms is not None:  # run up to the plugin's inputs; the plugin is emulated below
            model = onnx.ModelProto()
            model.CopyFrom(engine.model)
            nodes = [n for n in model.graph.node if n.op_type != "EfficientNMS_TRT"]
            del model.graph.node[:]
            model.graph.node.extend(nodes)
            del model.graph.output[:]
            model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in engine.nms.input)
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.addresses: dict[str, int] = {}
        self.batch = 0

    def set_input_shape(self, name, shape):
        self.input_shape = tuple(shape)
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        info = next(t for t in self.engine.outputs if t.name == name)
        dims = [d.dim_value if d.dim_value else self.batch for d in info.type.tensor_type.shape.dim]
        return tuple(dims)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream) -> bool:
        name = self.engine.inputs[0].name
        images = _array_at(self.addresses[name], self.input_shape, np.uint8).copy()
        outputs = self.session.run(None, {name: images})
        if self.engine.nms is not None:
            outputs = _efficient_nms(self.engine.nms, *outputs)
        for info, value in zip(self.engine.outputs, outputs, strict=True):
            dtype = _NP[_ONNX[info.type.tensor_type.elem_type]]
            _array_at(self.addresses[info.name], value.shape, dtype)[...] = value
        return True


def _efficient_nms(node, boxes: np.ndarray, scores: np.ndarray):
    from torchvision.ops import batched_nms

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    k, iou, thr = attrs["max_output_boxes"], attrs["iou_threshold"], attrs["score_threshold"]
    b = scores.shape[0]
    num = np.zeros((b, 1), np.int32)
    out_boxes, out_scores, out_labels = np.zeros((b, k, 4), np.float32), np.zeros((b, k), np.float32), np.zeros((b, k), np.int32)
    for i in range(b):
        s = torch.from_numpy(scores[i].astype(np.float32))
        anchor, label = torch.nonzero(s >= thr, as_tuple=True)
        cand = s[anchor, label]
        order = cand.argsort(descending=True)[:4096]
        anchor, label, cand = anchor[order], label[order], cand[order]
        bx = torch.from_numpy(boxes[i].astype(np.float32))[anchor]
        keep = batched_nms(bx, cand, label, iou)[:k]
        n = len(keep)
        num[i, 0] = n
        out_boxes[i, :n], out_scores[i, :n], out_labels[i, :n] = bx[keep].numpy(), cand[keep].numpy(), label[keep].numpy()
    return [num, out_boxes, out_scores, out_labels]
