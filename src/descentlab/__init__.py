"""descentlab: why training stops improving, and what gets it going again.

Layers (a lower layer never imports a higher one)::

    cli / commands      the ``descentlab`` command line
    report              figures and one self-contained HTML page per run directory
    experiments         training loop, stall monitor, sweeps, run directories
    critical, landscape classify a point and escape a saddle | loss slices
    curvature           Hessian-vector products, exact Hessian, Lanczos, density, trace
    optim, schedules    optimizers and learning-rate schedules
    problems            surfaces and workloads (data + model)

``errors`` and ``files`` are small helpers every layer may use.
"""

__version__ = "0.1.0"
