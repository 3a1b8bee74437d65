"""gan (see DESIGN.md)."""
