#!/bin/bash
# Session 11 (2026-12-03, AMD EPYC, 2 cores), issue 17: two chains of one thread each.
# A: NCSN with the DDPM's training distribution of noise levels (score.level_sampling = "cosine"), 4200 steps as
#    the session-10 pair (DDPM FID 4.20 / NCSN uniform levels 8.20 at 4200 steps), scored like that pair.
# B: the VAE and HVAE rows of the families table again after the session-10 initialisation fix (30 minutes each).
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ELBOLAB_DATA=../shared/data
PY=.venv/bin/python
L=benchmarks/results/logs
log() { echo "$(date -u +%T) $*" >> $L/session11.sh.log; }
(
    $PY -m elbolab train ncsn-mnist --data mnist --data-dir ../shared/data/mnist --steps 4200 --set train.minutes=0 \
        --set score.level_sampling=cosine --out runs/pair11/ncsn-cosine > $L/pair11_ncsn_cosine.log 2>&1
    log "ncsn cosine trained rc $?"
    $PY benchmarks/quality.py --data-dir ../shared/data/mnist --runs runs/pair11/ncsn-cosine --n 1000 --sampler ddim \
        --steps 25 --bpd-n 0 --threads 1 --out benchmarks/results/pair_ddpm_ncsn_4200steps_ncsn_cosine \
        > $L/pair11_ncsn_cosine_quality.log 2>&1
    log "ncsn cosine scored rc $?"
) &
(
    $PY benchmarks/quality.py --all-presets --families vae,hvae --parallel 1 --minutes 30 --threads 1 \
        --data-dir ../shared/data/mnist --runs-dir runs/families --out benchmarks/results/families_vae_hvae_s11 \
        > $L/families_vae_hvae_s11.log 2>&1
    log "vae hvae families rows rc $?"
) &
wait
