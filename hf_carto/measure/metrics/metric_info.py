"""The ``evaluate.MetricInfo`` both metric scripts describe themselves with."""

from __future__ import annotations

import datasets
import evaluate


def binary_metric_info(description: str, inputs_description: str, prediction: str, reference: str):
    """Info of a metric over paired ``predictions`` and ``references`` of the given value types."""
    features = datasets.Features({"predictions": datasets.Value(prediction), "references": datasets.Value(reference)})
    return evaluate.MetricInfo(
        description=description, citation="", inputs_description=inputs_description, features=features
    )
