"""descentlab: why training stops improving, and what gets it going again.

Layers (a lower layer never imports a higher one)::

    cli / commands      the ``descentlab`` command line
    report              figures and one self-contained HTML page per run directory
    experiments         training loop, stall monitor, sweeps, run directories
    critical, landscape classify a point and escape a saddle | loss slices
    curvature           Hessian-vector products, exact Hessian, Lanczos, density, trace
    optim, schedules    optimizers and learning-rate schedules
    problems            surfaces and workloads (data + model)

``errors``, ``files``, ``checks`` (argument validation), ``rundir`` (run directories) and
``openmp`` (thread settings) are small helpers every layer may use. ``make test`` checks these
layers with import-linter (the contracts are in ``pyproject.toml``).
"""

__version__ = "0.1.0"
