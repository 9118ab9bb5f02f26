"""Feature visualization (Lucid, in PyTorch) and optimizing an input until a model gives a result.

Four parts, one module each (as in tensorflow/lucid's optvis): ``param`` (what is optimized:
pixels or an FFT spectrum, decorrelated colour, sigmoid/clamp), ``transform`` (random
pad/jitter/scale/rotate for robustness), ``objectives`` (what is maximized, composable with
``+ - * /``) and ``render`` (the loop). ``inversion`` optimizes an input until the model gives a
target: a class, a string for a recognizer, an activation pattern (Nguyen et al. 2016;
Mahendran & Vedaldi 2015).

Example::

    from dawnet.diagnose import optvis
    from dawnet.diagnose.optvis import objectives as obj

    result = optvis.render(model, obj.channel("features.6", 12) - 0.05 * obj.total_variation(),
                           size=(64, 256), seed=0)
    result.images[512][0].save("channel12.png")
    result.figure            # matplotlib Figure
"""

from dawnet.diagnose.optvis import objectives, param, transform
from dawnet.diagnose.optvis.inversion import InversionResult, optimize_input
from dawnet.diagnose.optvis.objectives import Objective, as_objective, wrap_objective
from dawnet.diagnose.optvis.param import image
from dawnet.diagnose.optvis.render import RenderResult, Visualization, render
from dawnet.diagnose.optvis.transform import standard_transforms

__all__ = [
    "objectives",
    "param",
    "transform",
    "render",
    "Visualization",
    "RenderResult",
    "image",
    "standard_transforms",
    "Objective",
    "as_objective",
    "wrap_objective",
    "optimize_input",
    "InversionResult",
]
