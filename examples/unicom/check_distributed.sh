#!/usr/bin/env bash
# taxon-unicom as 2 ranks on loopback (Gloo), one case per ctest: check_distributed.sh CASE LAUNCH EXE WORK
#   equal_one_process  the same command as 1 process and under `taxon_launch 2` writes the same outputs: identical
#                      k-means labels, embeddings and centres within fp32 tolerance, the same retrieval figures
#   resume_bit_exact   a 2-rank run killed after a mid-epoch checkpoint and resumed on 2 ranks ends byte-identical
#                      to an uninterrupted 2-rank run (model.safetensors, centroids.npy, embeddings.npy)
#   kill_rank          rank 1 killed (SIGKILL) while training: rank 0 exits non-zero within the collective timeout
#                      with [taxon.dist.peer-failed] naming rank 1
#   torchrun           `torchrun --no-python --nproc-per-node 2` runs the same command, with the same retrieval
#                      figures as one process (skipped, exit 77, without a working torchrun: Debian 12's cannot
#                      start workers under Python 3.11; the second CI leg uses its venv's torch 2.x torchrun)
# Small demo28 runs on a Fashion-MNIST subset; GPUs hidden; one intra-op thread per rank.
set -uo pipefail
case_=$1 launch=$2 exe=$3 work=$4
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
export CUDA_VISIBLE_DEVICES=-1 TAXON_NUM_THREADS=1 OMP_NUM_THREADS=1
run=(--train-limit 256 --eval-limit 128 --model demo28 --image-size 28 --cluster-ratio 0.1 --kmeans-iters 5
     --batch-size 32 --epochs 1 --workers 1 --augment false --device cpu --dist-timeout 20)
fail() { echo "FAIL: $*"; exit 1; }

# float32 payload of a .npy file, one value per line
npy_values() {
  local hlen
  hlen=$(od -An -tu2 -j8 -N2 "$1" | tr -d ' ')
  od -An -v -f -j $((10 + hlen)) "$1" | tr -s ' ' '\n' | sed '/^$/d'
}
# close A.npy B.npy ATOL: same number of values, every |a - b| <= ATOL
close() {
  paste <(npy_values "$1") <(npy_values "$2") |
    awk -v tol="$3" -v name="$(basename "$1")" '
      NF != 2 { bad = "different sizes"; exit }
      { d = $1 - $2; if (d < 0) d = -d; if (d > max) max = d; n++ }
      END { if (bad != "") { print name ": " bad; exit 1 }
            printf "%s: %d values, max |difference| %.3g (tolerance %s)\n", name, n, max, tol; exit !(max <= tol) }'
}
# figure FILE KEY...: the first number after "KEY" in each block of retrieval.json, in order
figures() { grep -oE "\"(recall_at_1|map_at_r)\": [-0-9.e]+" "$1"; }

case $case_ in
equal_one_process)
  "$exe" "${run[@]}" --run-dir one >one.log 2>&1 || { tail -20 one.log; fail "1-process run"; }
  "$launch" --timeout 240 2 -- "$exe" "${run[@]}" --run-dir two >two.log 2>&1 || { tail -30 two.log; fail "2-rank run"; }
  grep -q "distributed: rank 0 of 2" two.log || fail "the 2-rank run did not run distributed"
  cmp one/round-0/labels.npy two/round-0/labels.npy || fail "k-means labels differ"
  close one/embeddings.npy two/embeddings.npy 2e-4 || fail "embeddings differ"
  close one/centroids.npy two/centroids.npy 2e-4 || fail "class centres differ"
  diff <(figures one/retrieval.json) <(figures two/retrieval.json) || fail "retrieval figures differ"
  ;;
resume_bit_exact)
  more=(--epochs 2 --checkpoint-every "3 steps")
  "$launch" --timeout 240 2 -- "$exe" "${run[@]}" "${more[@]}" --run-dir straight >straight.log 2>&1 ||
    { tail -30 straight.log; fail "uninterrupted 2-rank run"; }
  "$launch" --timeout 240 2 -- "$exe" "${run[@]}" "${more[@]}" --run-dir cut >cut.log 2>&1 &
  lpid=$!
  for _ in $(seq 1200); do [[ -e cut/round-0/checkpoints/step-000000006/trainer.json ]] && break; sleep 0.05; done
  [[ -e cut/round-0/checkpoints/step-000000006/trainer.json ]] || { kill -9 $(pgrep -P $lpid); fail "no checkpoint"; }
  kill -9 $(pgrep -P $lpid) 2>/dev/null
  wait $lpid
  [[ -e cut/model.safetensors ]] && fail "the run finished before it was killed; nothing was resumed"
  "$launch" --timeout 240 2 -- "$exe" --resume cut >resume.log 2>&1 || { tail -30 resume.log; fail "resumed run"; }
  grep -q "resumed from" resume.log || fail "the resumed run did not resume from a checkpoint"
  for f in model.safetensors centroids.npy embeddings.npy; do
    cmp straight/$f cut/$f || fail "$f differs after resuming"
  done
  ;;
kill_rank)
  start=$(date +%s)
  "$launch" --timeout 120 2 -- "$exe" "${run[@]}" --epochs 3 --checkpoint-every "2 steps" --dist-timeout 10 \
    --run-dir killed >killed.log 2>&1 &
  lpid=$!
  for _ in $(seq 1200); do [[ -e killed/round-0/checkpoints/latest ]] && break; sleep 0.05; done  # training
  victim=""
  for p in $(pgrep -P $lpid); do tr '\0' '\n' </proc/$p/environ | grep -qx RANK=1 && victim=$p; done
  [[ -n $victim ]] || fail "rank 1 not found"
  kill -9 "$victim"
  wait $lpid; rc=$?
  elapsed=$(($(date +%s) - start))
  tail -5 killed.log
  [[ $rc -ne 0 && $rc -ne 124 ]] || fail "launcher status $rc: expected the ranks' failure, not success or a hang"
  grep -qE "taxon-unicom: rank 0: \[taxon\.dist\.peer-failed\].*rank 1" killed.log ||
    fail "rank 0 did not exit naming rank 1"
  grep -q "taxon_launch: rank 0 exited with status 2" killed.log || fail "rank 0 did not exit with status 2"
  ((elapsed < 60)) || fail "took ${elapsed} s"
  ;;
torchrun)
  torchrun=${5:-}
  [[ -n $torchrun && $torchrun != *NOTFOUND ]] || { echo "skipped: no torchrun found (Debian: python3-torch)"; exit 77; }
  # Debian 12's torchrun (torch 1.13 under Python 3.11) starts no worker at all: Std.from_str('0') is None there.
  if ! "$torchrun" --standalone --no_python --nproc_per_node 1 true >probe.log 2>&1; then
    echo "skipped: $torchrun cannot start a worker ($(tail -1 probe.log))"
    exit 77
  fi
  # The issue's spelling (--no-python, --nproc-per-node) where this torchrun takes it (2.x), else 1.13's underscores.
  if "$torchrun" --help 2>&1 | grep -q -- "--nproc-per-node"; then flags=(--no-python --nproc-per-node 2)
  else flags=(--no_python --nproc_per_node 2); fi
  "$torchrun" --standalone "${flags[@]}" "$exe" "${run[@]}" --run-dir tr >tr.log 2>&1 ||
    { tail -30 tr.log; fail "torchrun run"; }
  grep -q "distributed: rank 0 of 2 (torchrun" tr.log || fail "not distributed under torchrun"
  [[ -e tr/embeddings.npy && -e tr/retrieval.json ]] || fail "outputs missing"
  # The same outputs as one process (the equal_one_process case checks every figure; here the retrieval figures).
  "$exe" "${run[@]}" --run-dir one >one.log 2>&1 || { tail -20 one.log; fail "1-process run"; }
  [[ "$(figures one/retrieval.json)" == "$(figures tr/retrieval.json)" ]] || fail "retrieval figures differ from one process"
  echo "torchrun: $torchrun ${flags[*]}: 2 ranks, retrieval figures equal to one process's"
  ;;
*) fail "unknown case $case_" ;;
esac
echo "ok: $case_"
