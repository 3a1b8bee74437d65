"""vae (see DESIGN.md)."""
