"""Plots for repurposed models. Needs the ``plot`` extra (matplotlib), imported lazily.

Each line below belongs to the module that defines the plot.
"""

__all__: list[str] = []
from repurpose.plot._gates import gates  # noqa: E402

__all__ += ["gates"]
from repurpose.plot._uncertainty import reliability_diagram, uncertainty_bars  # noqa: E402

__all__ += ["reliability_diagram", "uncertainty_bars"]
