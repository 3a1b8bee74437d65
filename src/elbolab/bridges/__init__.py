"""Bridges to other libraries (optional extras). :mod:`elbolab.bridges.diffusers`: a diffusers
``UNet2DModel`` + ``DDPMScheduler``/``DDIMScheduler`` folder as an elbolab model and process, and back.
Importing this package does not import diffusers."""
