"""score (see DESIGN.md)."""
