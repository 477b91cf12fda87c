"""taskonomy.experiments."""
