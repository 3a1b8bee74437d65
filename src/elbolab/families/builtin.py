"""The built-in families: importing a family module registers it (adding a family adds one line here)."""

from elbolab.families import ddpm, gan, ncsn, pixelcnn, vae, vdm  # noqa: F401
