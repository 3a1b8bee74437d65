#!/bin/bash
# Session 7, second half (replaced families.sh after 14:41 when the sampler benchmark proved ~2x slower on one
# thread than planned): chain A waits for the NCSN training + scoring, then the Bernoulli Burda VAE and HVAE
# (8 minutes each); chain B reruns the sampler benchmark on ddpm60 reusing the session-6 cells of the samplers
# that did not change (the karras grid did: euler and heun are rerun), then scores the part-1 rows. Finally the
# one table (every scored row reused from its run folder; DDPM and VDM rows from the 60-minute reference runs).
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ELBOLAB_DATA=../shared/data
PY=.venv/bin/python
L=benchmarks/results/logs
Q="$PY benchmarks/quality.py --all-presets --minutes 30 --data-dir ../shared/data/mnist --runs-dir runs/families"
log() { echo "$(date -u +%T) $*" >> $L/families.sh.log; }
(
    while pgrep -f "families ncsn --parallel 1" > /dev/null; do sleep 10; done
    log "ncsn trained and scored"
    for p in vae-burda-mnist hvae-burda-mnist; do
        $PY benchmarks/vae_quality.py --data-dir ../shared/data --runs-dir runs/vae-burda --presets $p \
            --minutes $p=8 --iwae-k 5000 --iwae-minutes 3 --n-samples 1000 --threads 1 \
            --out benchmarks/results/vae_burda_$p.json > $L/vae_burda_$p.log 2>&1
        log "burda $p rc $?"
    done
) &
(
    $PY benchmarks/sampler_quality.py benchmarks/reference-runs/ddpm60 --nll-n 0 \
        --reuse-log benchmarks/results/logs/sq_ddpm60.log --reuse-samplers ancestral,ddim,dpmpp_2m,dpmpp_2m_sde \
        > $L/sq_ddpm60_v2.log 2>&1
    log "sampler_quality rc $?"
    $Q --threads 1 --families gan,vae,hvae,pixelcnn --out benchmarks/results/families_part1 \
        > $L/families_part1_score.log 2>&1
    log "part 1 scored rc $?"
) &
wait
OMP_NUM_THREADS=2 $Q --threads 2 --reuse ddpm=benchmarks/reference-runs/ddpm60 \
    vdm=benchmarks/reference-runs/vdm60-learned --out benchmarks/results/families > $L/families.log 2>&1
log "families rc $?"
