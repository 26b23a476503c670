"""Per-layer statistics of a training step: the metric registry, the probe and its backends."""
