"""Artefacts: the on-disk contracts every other package reads.

The lowest layer above :mod:`sadc.errors`; it imports no other sadc package.

- :mod:`sadc.artefacts.checkpoint`: the checkpoint format, atomic writes, ``load_checkpoint``
- :mod:`sadc.artefacts.sidecar`: the JSON sidecar next to every export (read, write, validate)
- :mod:`sadc.artefacts.io`: the deploy graph's I/O contract (input/output names, EfficientNMS layout)
"""
