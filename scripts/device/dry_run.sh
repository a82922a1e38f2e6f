#!/usr/bin/env bash
# Rehearse scripts/device/open_vocab_gpu.sh here before spending device time: the bundle from bundle.sh, a
# fresh cache, tiny versions of its two stages (12 questions, 2 voices, at most 24 + 6 steps), as two calls: the
# first stopped part-way, the second resuming it and running the QA stage; then a call 3 after a call 2 that fitted
# no step count; then a call 2 whose first train call fails.
#   bash scripts/device/dry_run.sh [PYTHON]
# PYTHON: best a venv holding only what the accelerator image holds (torch, transformers, peft, accelerate,
# safetensors, numpy, scipy, pandas, pyarrow, tqdm; plus soundfile, whose cp312 wheel cannot install here), so
# that a package the bundle lacks fails here (default: the project's .venv, which has them all). ~2 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
[ -f .dev/a/gguf.part1 ] || bash scripts/device/bundle.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/stash" && ln -s "$PWD/.dev/a/gguf.part1" "$tmp/stash/gguf.part1"
.venv/bin/python - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
small = dict(n_questions=12, n_val_questions=2, voices=["en-gb", "en-us"], batch_size=4, eval_max_new_tokens=4,
             target_max_new_tokens=8)
rep = json.load(open("configs/train/experiments/gpu_open_vocab_repeat.json"))
rep.update(small, vocab_words=1500, vocab_dose_words=10, vocab_control_words=3,
           steps=24)  # the most a time budget may fit
qa = json.load(open("configs/train/experiments/gpu_open_vocab_qa_lora.json"))
qa.update(small, steps=6, save_steps=[2])
json.dump(rep, open(f"{tmp}/repeat.json", "w"))
json.dump(qa, open(f"{tmp}/qa.json", "w"))
PY
run() {  # one device call: its own empty $OUT, the shared cache and $DEV (a warm machine)
  rm -rf "$tmp/out" && PY=$PY DEV=$tmp/dev OUT=$tmp/out STASH=$tmp/stash LSL_CACHE_DIR=$tmp/cache REP=$tmp/repeat.json \
    QA=$tmp/qa.json SAVE_EVERY=6 QA_ON_DEVICE=1 QA_NEEDS=30 ENC_BATCH=${EB:-4} WORKER_KIND=processes bash scripts/device/open_vocab_gpu.sh "$@" \
    | grep -v "Loading\|Convert\|Writing"
}
stop_at_step() {  # what a call's timeout does on the device: SIGINT to the training once it reached step $1
  local log=$tmp/dev/runs/repeat/train_log.jsonl
  until [ -f "$log" ] && grep -q "\"kind\": \"train\", \"step\": $1," "$log"; do sleep 0.2; done
  pkill -INT -f "^$PY -m lsl_core train --config $tmp/repeat.json"  # the training, not its timeout
}
stop_at_step 9 &            # call 2: fitted (after step 5, before the checkpoint at 6), stopped part-way
run 3000 60
wait
run 3000 continue           # call 3: resumes, finishes, runs the QA stage, packs
cat "$tmp"/out/ckpts.tar.gz.part* | tar -tz | grep manifest.json
rm -rf "$tmp/dev/runs"      # as if call 2 had stopped before its fit (in the data): call 3 starts afresh
run 3000 continue | grep "afresh\|trained"
rm -rf "$tmp/dev/runs"      # a call 2 whose batched encoder fails (here: an invalid batch) goes on one clip at a time
EB=-1 run 3000 60 | grep "one clip at a time\|trained\|worker"
