"""apps (see DESIGN.md)."""
