"""Trace activations back to the input: receptive fields, top-k patches, gradient sensitivity.

The names live in one module per concept and are re-exported here, so ``from dawnet.diagnose.trace
import receptive_field`` keeps working:

* :mod:`dawnet.diagnose.layout` -- :func:`feature_layout`, :func:`canonical` (how a layer output is read).
* :mod:`dawnet.diagnose.receptive_field` -- :func:`receptive_field` (analytic and empirical, per axis),
  :class:`ReceptiveField`, :func:`to_input_space`.
* :mod:`dawnet.diagnose.patches` -- :func:`top_patches`: per channel, the k strongest activations over
  a data set and the input patches under their receptive fields.
* :mod:`dawnet.diagnose.sensitivity` -- :func:`sensitivity` / :func:`occlusion`: how a chosen activation
  (a neuron, a channel, a character logit at one time step, the CTC log-probability of a string) depends
  on the input.
"""

from dawnet.diagnose.forward import Forward
from dawnet.diagnose.layout import LAYOUTS, canonical, feature_layout
from dawnet.diagnose.patches import TopPatches, top_patches
from dawnet.diagnose.receptive_field import (
    AxisRF,
    ReceptiveField,
    analytic_receptive_field,
    empirical_receptive_field,
    receptive_field,
    structural_copy,
    to_input_space,
)
from dawnet.diagnose.sensitivity import (
    Sensitivity,
    Target,
    channel,
    ctc_logprob,
    logit,
    neuron,
    occlusion,
    sensitivity,
)

__all__ = [
    "AxisRF", "ReceptiveField", "receptive_field", "analytic_receptive_field", "empirical_receptive_field",
    "structural_copy",
    "feature_layout", "canonical", "to_input_space", "LAYOUTS", "Forward",
    "TopPatches", "top_patches",
    "Target", "neuron", "channel", "logit", "ctc_logprob", "Sensitivity", "sensitivity", "occlusion",
]
