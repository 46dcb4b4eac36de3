"""Runtimes: one Predictor per backend behind one protocol.

- :mod:`sadc.runtime.base`: the ``Predictor`` protocol (``predict``, ``model_call``)
- :mod:`sadc.runtime.load`: the backend table, ``load_predictor``, ``check_artefact``
- :mod:`sadc.runtime.predict`: end to end (letterbox, predict, boxes back to original pixels)
- :mod:`sadc.runtime.torch_rt`, :mod:`~sadc.runtime.onnx_rt`, :mod:`~sadc.runtime.trt_rt`: the backends
- :mod:`sadc.runtime.accuracy`: COCO mAP of any predictor
"""
