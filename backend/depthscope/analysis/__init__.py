"""Analysis: mean-field theory, Jacobian spectra, init scans and diagnoses of runs (numeric core;
no HTTP, no store)."""
