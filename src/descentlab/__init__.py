"""descentlab: why training stops improving, and what gets it going again.

Layers (a lower layer never imports a higher one)::

    cli / commands      the ``descentlab`` command line: parse, call one library function, write the run
    report              figures and one self-contained HTML page per run directory
    integrations        optional adapters for other trainers' loops
    experiments         studies (compare, batch size, minimum ratio, normalization), sweeps, train()
    critical, landscape the diagnosis (classify, escape, the stall monitor) | loss slices and planes
    engine              the callback protocol, a change to a run, stacked ensembles, run_steps, the step timer
    curvature           the data layer (EmpiricalLoss) and every product over it: Hessian, GGN, Lanczos, ...
    optim, schedules    optimizers and learning-rate schedules
    problems            surfaces and workloads (data + model)

``errors``, ``files`` (atomic writes), ``checks`` (argument validation), ``rundir`` (run
directories), ``openmp`` (thread settings), ``params`` (the one parameter flattener),
``intervals`` (findings with their uncertainty), ``ranks`` (decisions agreed over a
``torch.distributed`` job), ``worker_pool`` (process pools that end with their parent) and
``monitor_defaults`` are small helpers every layer may use. ``make test`` checks these
layers with import-linter (the contracts are in ``pyproject.toml``).
"""

__version__ = "0.1.0"
