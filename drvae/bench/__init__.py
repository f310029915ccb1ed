"""`make bench`: `python -m drvae.bench` writes experiments/benchmarks/."""
