"""The probe's two ways of computing a step's statistics: batched tensor ops and C kernels."""
