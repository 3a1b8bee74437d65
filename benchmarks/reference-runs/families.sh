#!/bin/bash
# Session 7 (2026-12-02, Intel Xeon with AMX, 2 cores): the rest of the families table (issue 17) and the
# sampler benchmark rerun (issue 15), two chains of one thread each, started while `quality.py --all-presets
# --families gan,vae,hvae,pixelcnn` (families_part1.log) trained its four runs. Run from anywhere. Stopped at
# 14:41 after its NCSN step started and replaced by families2.sh (the sampler benchmark needed ~110 min on one
# thread); kept as the record of how the first half ran.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ELBOLAB_DATA=../shared/data
PY=.venv/bin/python
L=benchmarks/results/logs
Q="$PY benchmarks/quality.py --all-presets --minutes 30 --data-dir ../shared/data/mnist --runs-dir runs/families --threads 1"
# 1. the part-1 trainings end, then its scoring (started with the code before this session's fixes) is stopped
while pgrep -f "out benchmarks/results/families_part1" >/dev/null && ! grep -q "floor row" $L/families_part1.log; do
    sleep 10
done
pkill -f "out benchmarks/results/families_part1"
echo "$(date -u +%T) part 1 trained" >> $L/families.sh.log
# 2. chain 1: NCSN (30 min, both its rows), then the Bernoulli Burda VAE; chain 2: score part 1, the sampler
#    benchmark on the 60-minute DDPM run, then the Bernoulli Burda HVAE
(
    $Q --families ncsn --parallel 1 --out benchmarks/results/families_ncsn > $L/families_ncsn.log 2>&1
    echo "$(date -u +%T) ncsn rc $?" >> $L/families.sh.log
    $PY benchmarks/vae_quality.py --data-dir ../shared/data --runs-dir runs/vae-burda --presets vae-burda-mnist \
        --minutes vae-burda-mnist=12 --iwae-k 5000 --iwae-minutes 4 --n-samples 1000 --threads 1 \
        --out benchmarks/results/vae_burda_1layer.json > $L/vae_burda_1layer.log 2>&1
    echo "$(date -u +%T) burda vae rc $?" >> $L/families.sh.log
) &
(
    $Q --families gan,vae,hvae,pixelcnn --out benchmarks/results/families_part1 > $L/families_part1_score.log 2>&1
    echo "$(date -u +%T) part 1 scored rc $?" >> $L/families.sh.log
    $PY benchmarks/sampler_quality.py benchmarks/reference-runs/ddpm60 --nll-n 0 > $L/sq_ddpm60_v2.log 2>&1
    echo "$(date -u +%T) sampler_quality rc $?" >> $L/families.sh.log
    $PY benchmarks/vae_quality.py --data-dir ../shared/data --runs-dir runs/vae-burda --presets hvae-burda-mnist \
        --minutes hvae-burda-mnist=12 --iwae-k 5000 --iwae-minutes 4 --n-samples 1000 --threads 1 \
        --out benchmarks/results/vae_burda_2layer.json > $L/vae_burda_2layer.log 2>&1
    echo "$(date -u +%T) burda hvae rc $?" >> $L/families.sh.log
) &
wait
# 3. the one table: every row (the trained ones reuse their scored rows), DDPM and VDM from the 60-minute runs
OMP_NUM_THREADS=2 $PY benchmarks/quality.py --all-presets --minutes 30 --data-dir ../shared/data/mnist \
    --runs-dir runs/families --threads 2 --reuse ddpm=benchmarks/reference-runs/ddpm60 \
    vdm=benchmarks/reference-runs/vdm60-learned --out benchmarks/results/families > $L/families.log 2>&1
echo "$(date -u +%T) families rc $?" >> $L/families.sh.log
