"""Curvature of a loss: Hessian-vector products, the exact Hessian, Lanczos, density, trace."""
