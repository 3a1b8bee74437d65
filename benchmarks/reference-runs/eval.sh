#!/bin/bash
# The issue-16 table from the four 60-minute runs: waits for the second pair, then evaluates in stages on two
# workers (one thread each) so that the cheap columns land first, merging into benchmarks/results/vdm_bpd after
# every stage:
#   1. ELBO on 1000 test images + FID of 1000 samples at one <= 25-NFE sampler, every row;
#   2. the probability-flow ODE NLL on 256 test images (dopri5 rtol 1e-3, joint solves of 32), every row
#      (the learned-schedule VDM, whose ODE is the stiffest, alone on one worker);
#   3. a second FID candidate per row and the tolerance check (8 images at rtol 1e-5) on the DDPM row.
cd "$(dirname "$0")/../.."
while pgrep -f "out vdm60-fixed|out flow60|pair2.sh" > /dev/null; do sleep 5; done
R=benchmarks/reference-runs
for r in ddpm60 vdm60-learned vdm60-fixed flow60; do  # portable: the data come from $ELBOLAB_DATA
    sed -i 's|^data_dir = ".*"$|data_dir = ""|' $R/$r/config.toml
done
export ELBOLAB_DATA=$(cd ../shared/data && pwd) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
P=".venv/bin/python benchmarks/vdm_table.py"
D="DDPM (ddpm-mnist preset, v-pred, cosine)=$R/ddpm60"
L="VDM learned gamma + Fourier=$R/vdm60-learned"
F="VDM fixed-linear gamma=$R/vdm60-fixed"
W="flow matching=$R/flow60"
COMMON="--elbo-n 1000 --nll-n 256 --nll-batch 32 --nll-rtol 1e-3 --fid-n 1000"
merge() { $P --merge $R/s1a.json $R/s1b.json $R/s2a.json $R/s2b.json $R/s3a.json $R/s3b.json --plots \
          --out benchmarks/results/vdm_bpd >> $R/table_merge.log 2>&1; }
# stage 1
$P $COMMON --skip nll --row "$D=dpmpp-2m:25" --row "$L=dpmpp-2m:25" --out $R/s1a > $R/s1a.log 2>&1 &
$P $COMMON --skip nll --row "$F=dpmpp-2m:25" --row "$W=flow-heun:13" --out $R/s1b > $R/s1b.log 2>&1 &
wait; merge
# stage 2
$P $COMMON --skip elbo,fid --row "$L=x:1" --out $R/s2b > $R/s2b.log 2>&1 &
( $P $COMMON --skip elbo,fid --row "$D=x:1" --row "$F=x:1" --row "$W=x:1" --out $R/s2a > $R/s2a.log 2>&1; merge
  $P $COMMON --skip elbo,nll --row "$D=ddim:25" --row "$F=ancestral:25" --row "$W=dpmpp-2m:25" \
      --out $R/s3a > $R/s3a.log 2>&1; merge ) &
wait; merge
$P $COMMON --skip elbo,fid,nll --nll-check-n 8 --nll-check-rtol 1e-5 --row "$D=x:1" --out $R/s3b \
    > $R/s3b.log 2>&1 &
$P $COMMON --skip elbo,nll --row "$L=ancestral:25" --out $R/s3c > $R/s3c.log 2>&1 &
wait
$P --merge $R/s1a.json $R/s1b.json $R/s2a.json $R/s2b.json $R/s3a.json $R/s3b.json $R/s3c.json --plots \
    --out benchmarks/results/vdm_bpd >> $R/table_merge.log 2>&1
echo done > $R/eval.done
