"""The browser frontend as a resource package: static files the app serves at / (no build step)."""
