#!/bin/bash
# waits for the first pair (ddpm60, vdm60-learned) to end, then trains the second pair of the issue-16 table
cd "$(dirname "$0")"
while pgrep -f "out ddpm60|out vdm60-learned" > /dev/null; do sleep 5; done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
E=../../.venv/bin/elbolab
$E train vdm-mnist-full --data-dir ../../../shared/data/mnist --minutes 60 --set vdm.schedule=fixed_linear \
    --set unet.input_fourier=false --out vdm60-fixed > vdm60-fixed.log 2>&1 &
$E train flow-mnist --data mnist --data-dir ../../../shared/data/mnist --minutes 60 --out flow60 > flow60.log 2>&1 &
wait
