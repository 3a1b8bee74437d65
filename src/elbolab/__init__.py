"""elbolab: the ELBO family of generative models (VAE, HVAE, DDPM, score-based, GAN), every term checked."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
