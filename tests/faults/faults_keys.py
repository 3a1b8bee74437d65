"""Every CLI spelling the fault suite depends on, in one place (the config keys are being renamed: a family's
sections move under ``model.``; change them here only)."""

PRESET = "ddpm-tiny"
STEPS = 4  # the shared run's length

# the one tiny run every scenario starts from: ~60 k parameters, 64 images, batches of 8
TINY = ["unet.base_channels=4", "unet.head_dim=4", "data.limit=64", "train.batch_size=8"]

LR = "train.lr"
GRAD_CLIP = "train.grad_clip"
CHECKPOINT_EVERY = "train.checkpoint_every"
LOG_EVERY = "train.log_every"
WARMUP = "train.warmup_steps"
HOLDOUT = "data.holdout"
ON_ERROR = "data.on_error"
IMAGE_SIZE_IN_CONFIG = "image_size"  # a key of config.toml's data section, as written

# a key that exists, but in another family's section (a VAE's latent sizes), and how the error names it
WRONG_FAMILY_KEY = "vae.latent_dims=[4]"
WRONG_FAMILY_NAME = "vae"
# a config file of family ddpm carrying a VAE's key in its model section (tiny data and batch, so that a
# regression that accepts it stays cheap), and the name its error must give
WRONG_FAMILY_TOML = ('family = "ddpm"\n\n[data]\nlimit = 8\n\n[train]\nbatch_size = 8\n\n'
                     '[model]\nlatent_dims = [4]\n')
WRONG_FAMILY_TOML_NAME = "latent_dims"

# the verb only the diffusion family has, used on a run folder of another family
DDPM_ONLY_VERB = ["progressive", "--n", "2", "--frames", "2", "--steps", "2"]

# the run folder's files (DESIGN.md)
CONFIG = "config.toml"
MODEL = "model.safetensors"
EMA = "ema.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
METRICS = "metrics.jsonl"
MANIFEST = "checkpoint.json"
STAGING = ".checkpoint-next"
CHECKPOINT_FILES = (MODEL, EMA, STATE_TENSORS, STATE_JSON, MANIFEST)

# exit codes (elbolab.errors.ExitCode), spelled out so that a renumbering is a visible change here
EXIT = {"usage": 2, "config": 3, "data": 4, "run": 5, "locked": 6, "diverged": 7, "disk_full": 8,
        "permission": 9, "io": 10, "interrupted": 130}
