#!/usr/bin/env bash
# taxon-unicom under faults and messy input (issue 19), one case per ctest: check_faults.sh CASE EXE WORK.
# Small runs only (demo28, 28 px, <= 256 training images); every GPU is hidden so all machines behave alike.
set -uo pipefail
case_=$1 exe=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
export CUDA_VISIBLE_DEVICES=-1 TAXON_NUM_THREADS=1  # one thread: fast and steady on a loaded machine
small=(--train-limit 128 --eval-limit 64 --model demo28 --image-size 28 --labels-from class --batch-size 32
       --workers 1 --augment false --epochs 2)
fail() { echo "FAIL: $*"; exit 1; }
# ctrl_c MESSAGE LIMIT_MS: SIGINT to the run $pid (log in ./log); it must exit 130 within LIMIT_MS, having logged
# MESSAGE (returns 1 if not)
ctrl_c() {
  kill -INT $pid
  local start rc took
  start=$(date +%s%N)
  wait $pid; rc=$?
  took=$(( ($(date +%s%N) - start) / 1000000 ))
  tail -3 log
  [[ $rc -eq 130 ]] || fail "exit $rc, expected 130"
  [[ $took -lt $2 ]] || fail "took $took ms to stop"
  echo "stopped $took ms after Ctrl-C"
  grep -q "$1" log
}
# expect_error ID ARGS...: a non-zero exit (not a crash) whose output names [taxon.ID]
expect_error() {
  local id=$1; shift
  out=$("$exe" "$@" 2>&1); rc=$?
  echo "$out" | tail -4
  [[ $rc -ne 0 && $rc -le 2 ]] || fail "exit $rc, expected 1 or 2"
  grep -q "\[taxon\.$id\]" <<<"$out" || fail "expected [taxon.$id] in the output"
}
# A 32x32 RGB gradient PNG, for CSV datasets whose images must exist.
png_b64='iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAI0ElEQVR42g3MEYMjPQMA4MALAwcDBwMLAwsDC4GFwEKgECgECoFCoBAoBAqBQqAQKAQKgUKgECgECoGFwEJgYWBh4GDgYOBg4IPBr88PeAAAoAL/1aBqwK8W1B34DUGDwAsGLQGvFHQMvHEABXiXACnwoQE2YGUBcWDtAQ1gEwFLYJsBL2DXAzGA/QjkBA4zUAs4Pvv/qqqqq19NVbfV765qYPWCqhZXr6TqaPXGKsird1EhWX2oCutqZSpiq7WrqK82oWKx2qaK52pXKtFX+6GSY3WYKjVXx6XSANTP/ldd1039u62brn6BdYvqV1x3pH6jNWT1O6+RqD9kjVW90jUx9drW1NUbX7NQb2PNU73LtSj1vq/lUB/GWk31ca71Up8AaH5VzbP/3TRN27x0TQubV9R0uHkjDaTNO2sQbz5Eg2WzUg3Rzdo01DYb1zDfbEPDY7NLjcjNvjSybw5Do8bmODV6bk5LYwBo66r9XbfP/qVt2659hW2H2jfcQtK+0xax9oO3WLQr2RLVrnVLTbuxLXPt1rc8tLvYitTucytLe+hbNbTHsdVTe5pbs7RnALrfVdfU3UvTPfvXrutg94Y6iLt30iHafbAO824lOiK7teqo7jamY7bbuo77bhc6Ebt96mTuDqVTfXccOj12p6kzc3deOgsAbCr4UsO2ga8tfPZvEEIE3zFEBH5QiBlccUgEXEtIFdxoyAzcWsgd3HkoAtxHKBM8ZKgKPPZQD/A0QjPB8wztAi8AoJcKtTV6bVDXorcOPft3hBBGHwRhilYMEY7WAlGJNgoxjbYGcYt2DgmP9gHJiA4JqYyOBekenQZkRnSekJ3RZUEOANxW+LXGXYPfWgw7/A7xs//AGBO8opgwvOaYCryRmCm81ZgbvLNYOLz3WAZ8iFglfMxYF3zqsRnwecR2wpcZuwVfASCvFelq8tYQ2JL3jiBIPhB59itCCCVrRignG0GYJFtFuCY7Q4Qle0ekJ4dAVCTHRHQmp0JMT84DsSO5TMTN5LoQDwDtKvpWU9jQ95aijn5AihFdYfrs15RSRjecMkG3knJFd5oKQ/eWSkcPnqpAj5HqRE+ZmkLPPbUDvYzUTfQ6U7/QGwDsrWKwZu8NQy376BiGbIUYwWxN2LPfMMY42wrGJdspJjTbGyYtOzimPDsGpiM7JWYyOxdme3YZmBvZdWJ+ZreFBQA4rPh7zVHDP1qOO76CnCC+xpwSvqH82W8554LvJBeK7zWXhh8sV44fPdeBnyI3iZ8zt4Vfeu4Gfh25n/ht5mHhdwDEeyVQLT4agVux6gSBYo0ExWJDBKNiy8Sz3wkhpNgrIbU4GKGsODqhvTgFYaI4J2GzuBThenEdhB/FbRJhFvdFRAAkquRHLXEjV60knVxDSZHcYMmI3FLJmdxx+ez3UkolD1oqI49WaidPXpogz1HaJC9ZuiKvvfSDvI0yTPI+y7jIBwDqo1K4VqtGkVatO0Wh2iDFsNoSxanaMSW42gv17A9KKa2ORmmrTk4Zr85B2aguSbmsrkX5Xt0GFUZ1n1Sc1WNRCQCNK72qNWn0utW00xuoGdJbrDnRO6oF03uupdAHqZ/9UWtt9Mlq4/TZaxv0JWqX9DVrX/St12HQ91HHST9mnRb9CYBZVYbUZt0Y2ppNZxg0W2Q4NjtiBDV7ZiQ3B2GUNEdlnv3JGGPN2RnrzSUYF801GZ/NrZjQm/tg4mgek0mz+VxMBsCSyq5rSxu7aS3r7BZajuwOW0HsnlrJ7IFbJexRWq3sSdtnf7bWOnvx1gV7jdYne8s2FHvvbRzsY7Rpsp+zzYv9AsCtK0drt2kca922cxy6HXICuz1xkroDc4q7o3BaupNyRruzcc/+4pzz7hqcj+6WXMjuXlzs3WNwaXSfk8uz+1pcAcDTym9qzxq/bT3v/A56gfwee0n8gXrF/JF7LfxJeqP8WXtr/MX6Z3/13gd/iz4kf88+Fv/ofRr85+jz5L9mXxb/DUDYVIHVYdsE3oZdFwQMexQkDgcSFA1HFjQPJxGMDGcVrA4XE5wNVxee/S2EEMM9hZjDo4TUh88h5DF8TaHM4XsJPQCRVXFbR97EXRtFF/cwShQPOCoSjzRqFk88GhHPMloVLzo6E682ehdvPj77e4wxxUeOqcTPPuYhfo2xTPF7jv0SfwBI2yrxOu2aJNq075KE6YCSwulIkqbpxJLh6SySlemiktPpapK36eZS8Oke0rN/pJRy+iwp9+lrSGVM31Pq5/SzpAGAzKu8q7No8r7NsssHmBXKR5w1ySeaDctnnq3IF5mdyledvck3m4PLd59jyI+Yn/1nzrnkrz6XIX+PuZ/yz5yHJf8BoOyqIuqyb4psy6ErCpYjKhqXEymGljMrlpeLKE6Wqypel5spwZa7K9GXRygpls9Unv1XKaUv30Ppx/IzlWEuf5YyAtCLqt/XvWz6Q9urrj/CXqP+hHtD+jPtLesvvHeiv8req/6m+2D6u+2j6x++T6H/jH1O/Vfun/133/dD/zP2w9T/mftx6f8CMOyrQdbDoRlUOxy7QcPhhAaDhzMZLB0ubHB8uIrBy+GmhqCHuxmiHR5uSH74DEOOw1caSh6+y/Dsf4ZhGIc/0zDOw99lmAAYZTUe6lE147EddTee4GjQeMajJeOFjo6NVz56Md7kGNR412M048OOyY2ffsxh/IpjSeN3Hvsy/vTjs/8zjuM0/p3HaRn/ATAdqknV07GZdDudusnA6Ywmi6cLmRydrmzyfLqJKcjprqaop4eZkp0+3ZT99BWmEqfvNPV5+inT0E9/hunZ/52maZ7+LdMMwKyq+VjPuplP7Wy6+Qxni+YLnh2Zr3T2bL7xOYj5Lueo5oeek5k/7Zzd/OXnEubvOPdp/snzUOY//TwO899xfvb/5nle5v8BsByrRdfLqVlMu5y7xcLlghaHlytZPF1ubAl8uYslyuWhlqSXT7Nku3y5pfjlOyx9XH7SMuTlT1nGfvk7LNO4/JuWZ/+/ZVn+D08g0EzUn3KLAAAAAElFTkSuQmCC'
with_images() {  # with_images FILE: writes the PNG under every image name of the CSV FILE
  for f in $(tail -n +2 "$1" | cut -d, -f1); do base64 -d <<<"$png_b64" >"$f"; done
}
csv_rows() {  # csv_rows FILE N SPECIES...: N rows of images (missing until with_images) cycling through the species
  local file=$1 n=$2; shift 2; local sp=("$@")
  printf 'fileNameAsDelivered,scientificName\n' >"$file"
  for ((i = 0; i < n; ++i)); do printf 'img%03d.png,%s\n' "$i" "${sp[i % ${#sp[@]}]}" >>"$file"; done
}
case $case_ in
disk_full)
  # The disk fills up inside the second checkpoint (each is ~10 MB for demo28): an id, the first checkpoint intact
  # and no temporaries left; then the run resumes from it and finishes.
  TAXON_IO_FAIL_AFTER_BYTES=16000000 expect_error io.disk-full "${small[@]}" --run-dir run
  grep -q "disk is full" <<<"$out" || fail "the message does not say the disk is full"
  [[ "$(cat run/round-0/checkpoints/latest)" == step-000000004 ]] || fail "latest is $(cat run/round-0/checkpoints/latest)"
  left=$(find run -name '*.tmp.*' | wc -l)
  [[ $left -eq 0 ]] || fail "$left temporaries left behind: $(find run -name '*.tmp.*')"
  out=$("$exe" --resume run 2>&1) || fail "resume failed: $out"
  grep -q "outputs in" <<<"$out" || fail "resume did not finish"
  grep -q "resumed from .*step-000000004" <<<"$out" || fail "did not resume from step 4"
  ;;
damaged_checkpoint)
  # A flipped bit in the newest checkpoint: the previous one is used and the log says so.
  "$exe" "${small[@]}" --epochs 3 --run-dir run >/dev/null 2>&1 || fail "first run failed"
  rm run/round-0/done
  ck=run/round-0/checkpoints
  [[ -d $ck/step-000000008 && -d $ck/step-000000012 ]] || fail "expected the last 2 checkpoints: $(ls $ck)"
  printf '\x01' | dd of=$ck/step-000000012/backbone.pt bs=1 seek=5000 count=1 conv=notrunc status=none
  out=$("$exe" --resume run 2>&1) || fail "resume failed: $out"
  grep -q "step-000000012 is damaged.*backbone.pt" <<<"$out" || fail "the damaged checkpoint is not named"
  grep -q "resumed from .*step-000000008" <<<"$out" || fail "did not fall back to step 8"
  ;;
partial_config)
  # Keys missing from --config take their defaults (the run then stops at the absent CSV).
  printf '{"epochs": 1, "dataset": "csv", "csv": "absent.csv", "ranks": ["species=scientificName"]}' >cfg.json
  expect_error io.missing-file --config cfg.json --run-dir run
  grep -q '"epochs": 1' run/config.json || fail "config.json lacks epochs 1"
  grep -q '"batch_size": 128' run/config.json || fail "config.json lacks the default batch_size"
  ;;
restart)
  # --restart discards an earlier run's rounds, baselines and metrics (this one then stops at the absent CSV).
  mkdir -p run/round-0/checkpoints/step-000000004 && echo '{"step": 1}' >run/metrics.jsonl && echo '{}' >run/eval-before.json
  expect_error io.missing-file --restart --dataset csv --csv absent.csv --rank species=scientificName --run-dir run
  [[ ! -e run/round-0 && ! -e run/metrics.jsonl && ! -e run/eval-before.json ]] || fail "the earlier run is still there"
  grep -q "discarded 3 entries" <<<"$out" || fail "does not say what it discarded"
  expect_error cli.bad-option --restart --resume run
  ;;
bad_numbers)
  expect_error cli.bad-option --train-limit -5 --run-dir run
  grep -q -- "--train-limit must be >= 0" <<<"$out" || fail "message does not name --train-limit"
  expect_error cli.bad-option --threads -4 --run-dir run
  expect_error cli.bad-option --checkpoint-every "5 fortnights" --run-dir run
  ;;
empty_inputs)
  printf 'fileNameAsDelivered,scientificName\n' >header-only.csv
  expect_error cli.empty-dataset --dataset csv --csv header-only.csv --rank species=scientificName --run-dir run
  grep -q "header but no data rows" <<<"$out" || fail "does not say the CSV has no rows"
  csv_rows one-class.csv 20 "Danio rerio"
  with_images one-class.csv
  expect_error cli.empty-dataset --dataset csv --csv one-class.csv --rank species=scientificName \
    --labels-from species --run-dir run
  grep -q "1 class" <<<"$out" || fail "does not say there is a single class"
  csv_rows missing.csv 20 "Danio rerio" "Salmo trutta"
  rm -f img*.png
  expect_error cli.empty-dataset --dataset csv --csv missing.csv --rank species=scientificName --run-dir run
  grep -q "all 20 rows name a missing image file" <<<"$out" || fail "does not say why the set is empty"
  ;;
duplicates)
  # Repeated rows are reported, and dropped with --dedup (the run then stops at the unknown model, after loading).
  csv_rows dups.csv 12 "Danio rerio" "Salmo trutta"
  tail -n +2 dups.csv | head -5 >>dups.csv
  with_images dups.csv
  expect_error backbone.unknown-model --dataset csv --csv dups.csv --rank species=scientificName --model none --run-dir run
  grep -q "5 of 17 rows repeat an image path" <<<"$out" || fail "duplicates not reported"
  expect_error backbone.unknown-model --dataset csv --csv dups.csv --rank species=scientificName --model none \
    --dedup path --run-dir run
  grep -q "dropped 5 repeated rows of 17" <<<"$out" || fail "duplicates not dropped"
  cp img000.png copy.png && printf 'copy.png,Danio rerio\n' >>dups.csv
  # Every image has the same bytes here: one is left, too few to hold one out for evaluation.
  expect_error cli.empty-dataset --dataset csv --csv dups.csv --rank species=scientificName --model none \
    --dedup content --run-dir run
  grep -q "dropped 17 repeated rows of 18 (5 same path, 12 same content" <<<"$out" || fail "same content not dropped"
  ;;
corrupt_images)
  # 4 of 30 images are corrupt: left out of embedding, k-means labels, training and evaluation alike, listed in
  # skipped_images.json and the log; a resume (labels.npy saved) lines up with the same reduced sets.
  csv_rows meta.csv 30 "Danio rerio" "Salmo trutta" "Esox lucius"
  with_images meta.csv
  for i in 003 011 017 026; do head -c 300 /dev/urandom >img$i.png; done
  args=(--dataset csv --csv meta.csv --rank species=scientificName --clusters 3 --kmeans-iters 3 --epochs 1
        --batch-size 4 --workers 1 --augment false --run-dir run)
  out=$("$exe" "${args[@]}" 2>&1) || fail "exit $?: $(tail -5 <<<"$out")"
  grep -q "outputs in" <<<"$out" || fail "the run did not finish"
  grep -q "images are unreadable and left out" <<<"$out" || fail "the log does not report the unreadable images"
  [[ $(grep -c '"row"' run/skipped_images.json) -eq 4 ]] || fail "skipped_images.json does not list 4 images"
  for i in 003 011 017 026; do grep -q "img$i.png" run/skipped_images.json || fail "img$i.png not named"; done
  grep -q '<b>4</b> unreadable images skipped (3 training, 1 evaluation)' run/report.html || fail "the report does not count them"
  for i in 003 011 017 026; do grep -q "<code>img$i.png</code>" run/report.html || fail "the report does not name img$i.png"; done
  rm run/round-0/done
  out=$("$exe" --resume run 2>&1) || fail "resume failed: $(tail -5 <<<"$out")"
  grep -q "outputs in" <<<"$out" || fail "the resumed run did not finish"
  grep -q "leaving out the .* unreadable images recorded" <<<"$out" || fail "resume did not apply the recorded skips"
  ;;
latin1)
  # A Latin-1 byte in the CSV's file name and in a rank value: the run finishes; JSON outputs hold U+FFFD.
  name=$'caf\xe9.csv'
  csv_rows "$name" 24 $'Salmo tru\xeftta' "Danio rerio"
  with_images "$name"
  out=$("$exe" --dataset csv --csv "$name" --rank species=scientificName --labels-from species --epochs 1 \
        --batch-size 4 --workers 1 --augment false --run-dir run 2>&1) || fail "exit $?: $(tail -5 <<<"$out")"
  grep -q "type_error" <<<"$out" && fail "a JSON exception escaped"
  grep -q "outputs in" <<<"$out" || fail "the run did not finish"
  grep -q $'caf\xef\xbf\xbd.csv' run/config.json || fail "config.json does not hold the name with U+FFFD"
  ;;
interrupt_embedding)
  # Ctrl-C once the embedding of 2,000 test images has started (its first 2% progress line): exit 130 within
  # seconds, from the embedding, not at the first training step.
  "$exe" --model demo28 --image-size 28 --train-limit 128 --eval-limit 2000 --labels-from class --workers 1 \
    --progress-every 2% --run-dir run >log 2>&1 &
  pid=$!
  for ((i = 0; i < 900; ++i)); do grep -aqE "embed eval [0-9]+/2000 \((2|4|6)%" log && break; sleep 0.1; done
  ctrl_c "interrupted during embed eval" 5000 || fail "not interrupted in the embedding"
  ;;
interrupt_kmeans)
  # Ctrl-C inside a long faiss k-means (10^6 iterations on pixel features): exit 130 within seconds through faiss's
  # interrupt callback, no labels saved, the baselines kept; the resumed run (fewer iterations) finishes.
  args=(--model demo28 --image-size 28 --train-limit 128 --eval-limit 64 --cluster-on pixels --clusters 8
        --workers 1 --augment false --epochs 1 --batch-size 64 --run-dir run)
  "$exe" "${args[@]}" --kmeans-iters 1000000 >log 2>&1 &
  pid=$!
  for ((i = 0; i < 900; ++i)); do grep -aq "kmeans\[faiss\]: N=" log && break; sleep 0.1; done
  sleep 0.3
  ctrl_c "interrupted during round-0 clustering (k-means)" 3000 || fail "not interrupted in k-means"
  [[ ! -e run/round-0/labels.npy && -e run/eval-before.json ]] || fail "labels saved or baselines lost"
  grep -q '"status": "interrupted"' run/timings.json || fail "timings.json does not say interrupted"
  grep -q 'class="status interrupted"' run/report.html || fail "the report does not say interrupted"
  out=$("$exe" --resume run --kmeans-iters 5 2>&1) || fail "resume failed: $out"
  grep -q "outputs in" <<<"$out" || fail "resume did not finish"
  ;;
*) fail "unknown case $case_" ;;
esac
echo "ok: $case_"
