"""The HTTP service: store, run manager, workers, live stream and the FastAPI app."""
