"""taskonomy.tasks."""
