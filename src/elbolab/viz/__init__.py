"""viz (see DESIGN.md)."""
