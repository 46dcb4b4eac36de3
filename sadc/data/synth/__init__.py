"""The synthetic world: :mod:`.render` draws images, :mod:`.write` lays splits out on disk."""

from sadc.data.synth.render import CLASSES, SYNTH_VERSION, SynthObject, render_image
from sadc.data.synth.write import ProgressFn, make_synthetic_world

__all__ = ["CLASSES", "SYNTH_VERSION", "ProgressFn", "SynthObject", "make_synthetic_world", "render_image"]
