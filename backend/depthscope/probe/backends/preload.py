"""Imported for its effect: loads the probe's C kernels in this process, once.

The run manager's fork server imports this module (service/runs.py), so every run's process is
forked with the kernels already imported and checked, and none of them warns on its own that
they were not built. Nothing else imports it: importing the API loads nothing.
"""

from __future__ import annotations

from depthscope.probe.backends import kernels

kernels.load()
