"""taskonomy.solvers."""
