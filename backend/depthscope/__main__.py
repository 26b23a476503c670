"""`python -m depthscope`: the same command line as `depthscope`."""

from depthscope.cli import main

raise SystemExit(main())
