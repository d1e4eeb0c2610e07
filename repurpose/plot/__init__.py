"""Plots for repurposed models. Needs the ``plot`` extra (matplotlib), imported lazily.

>>> from repurpose import plot
>>> sorted(plot.__all__)
['gates', 'leaderboard', 'reliability_diagram', 'uncertainty_bars']
"""

from repurpose.plot._gates import gates
from repurpose.plot._leaderboard import leaderboard
from repurpose.plot._uncertainty import reliability_diagram, uncertainty_bars

__all__ = ["gates", "leaderboard", "reliability_diagram", "uncertainty_bars"]
