#!/usr/bin/env bash
# The measurements a model folder ships on, each printed and kept in DIR/checks/:
#
#     python scripts/export_bundle.py --model runs/model --codec runs/sharp_pg --out runs/bundle \
#         --sampling '{"refine_borders": 0.6}'
#     scripts/release_checks.sh runs/bundle
#
# eval.txt: `streamgen eval` (the bars of the model card and the README); steering.txt: how soon a
# switched prompt shows and how continuous the switch is; profile.txt: where a frame's time goes, one
# stream and streams in one batch, also without the redraw and in mixed precision; codec.txt: the
# folder's codec decoders against the shipped ones on the same tokens. About an hour on two cores: nothing else should run beside it. THREADS=1 runs the
# eval, steering and codec checks on one thread each, so two folders can be checked side by side; the
# profile always times two threads, and its figures mean something only when it runs alone.
# VARIANT='{"local": "pnar", "pnar_steps": 2}' adds eval_variant.txt: the same eval with those sampling
# fields over the preset, and a profile column for them (a candidate for the default's speed).
set -euo pipefail
model=${1:?usage: [THREADS=N] scripts/release_checks.sh MODEL_DIR}
threads=${THREADS:-2}
out="$model/checks"
mkdir -p "$out"
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$out/$name.txt"; }
run eval streamgen eval --model "$model" --threads "$threads" --samples 90
run steering python benchmarks/steering.py --model "$model" --switches 60 --threads "$threads"
variants=('noredraw={"sampling": {"refine_borders": null}}' 'mixed={"precision": "mixed"}')
if [ -n "${VARIANT:-}" ]; then
    run eval_variant streamgen eval --model "$model" --threads "$threads" --samples 90 --sampling "$VARIANT"
    variants+=("variant={\"sampling\": $VARIANT}")
fi
run profile python benchmarks/frame_profile.py --model "$model" --streams 1 4 8 --variants "${variants[@]}"
run codec python benchmarks/codec_sharpness.py streamgen/weights "$model" --threads "$threads"
