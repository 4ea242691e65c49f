"""Dagster assets by domain.

We use a few Dagster APIs marked beta/preview on purpose (MultiPartitionMapping for the previous-day dependency,
pandera schemas as column schemas); their warnings would only clutter every run's output.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
