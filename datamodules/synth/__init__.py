"""Procedural synthetic indoor buildings in the released Taskonomy layout."""
