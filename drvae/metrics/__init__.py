"""Metrics: DR grading (torchmetrics collections) and, later, the synthetic-data audit."""
