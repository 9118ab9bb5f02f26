"""Receptive fields per input axis (height and width separately).

* :func:`receptive_field` -- the analytic receptive field (size, jump, start per axis) for conv/pool
  chains and a gradient-based empirical one for any architecture (branches, residuals, recurrence,
  attention), cross-checked where both apply.
* :class:`ReceptiveField` -- the result: ``axes``, ``box(*position)``, ``center``, ``to_dict``;
  :func:`to_input_space` resamples an activation map onto the input grid by it.

One module each: ``result`` (what a receptive field is), ``analytic`` (layer arithmetic), ``empirical``
(gradients), ``measure`` (both, cross-checked).
"""

from dawnet.diagnose.receptive_field.analytic import analytic_receptive_field
from dawnet.diagnose.receptive_field.empirical import empirical_receptive_field, structural_copy
from dawnet.diagnose.receptive_field.measure import receptive_field
from dawnet.diagnose.receptive_field.result import AxisRF, ReceptiveField, to_input_space

__all__ = [
    "AxisRF", "ReceptiveField", "receptive_field", "analytic_receptive_field", "empirical_receptive_field",
    "structural_copy", "to_input_space",
]
