"""Critical points: classify a point from the Hessian's spectrum, and escape a saddle."""
