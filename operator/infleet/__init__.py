"""infleet: place LLM inference fleets on heterogeneous accelerators at the lowest cost
that meets every model's percentile latency SLO."""

__version__ = "0.1.0"
