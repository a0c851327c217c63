"""Training loops, the stall monitor, sweeps and studies, and run directories."""
