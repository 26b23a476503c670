"""The numeric core: a validated run config, its data, its model and the training loop."""
