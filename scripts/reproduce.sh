#!/usr/bin/env bash
# The whole RKD-SC recipe, stage by stage: teacher, teacher-output cache, the KDL-DARTS
# lambda table (with plain DARTS on the same budget), stage-1 student KD, stage-2 codec
# (with and without teacher targets, and behind the teacher itself), the cross-entropy-only
# end-to-end baseline, and the accuracy-vs-SNR sweep.
#
#   scripts/reproduce.sh [RUNS_DIR]        (make reproduce)
#
# Every stage checkpoints each epoch and resumes when run again with the same --out, so
# an interrupted reproduction continues where it stopped: rerun the same command. Stages
# that finished return at once; a finished teacher cache is kept only if it is TEACHER's
# (another teacher's stops the script: use a new run folder). On a GPU set RKDSC_DEVICE=cuda;
# RKDSC_COMPILE=1 runs the training loops through torch.compile (on this 2-core CPU about
# 40% less time per stage-1 epoch; see docs/training.md); on a shared 2-core CPU,
# OMP_NUM_THREADS=1 keeps OpenMP from spinning against other work. Knobs (environment):
# TEACHER_EPOCHS (the preset's: 20 for FastNet), STUDENT_EPOCHS (30), CODEC_EPOCHS (12),
# CE_EPOCHS (STUDENT_EPOCHS + CODEC_EPOCHS: the CE-only baseline gets the RKD student's
# whole epoch budget), LAMBDAS (0,0.1,0.25: the lambda table; 0 is the KD-only row), LAMBDA (0.1: the row whose
# genotype the student uses; one of LAMBDAS), EVAL_SEEDS (2: protocol runs per genotype in
# the lambda table, reported as mean ± std), SEARCH_SEEDS (0 1: one lambda table per search
# seed, RUNS/nas for seed 0 and RUNS/nas-seedN for the others; the KDL-DARTS targets pool
# them, because one search's derived cell is noisy), SWEEP_LIMIT (2000 test images). Two knobs
# skip a stage: TEACHER, a teacher checkpoint to use instead of training one (e.g. the
# shipped rkdsc_core/weights/teacher/teacher), and GENOTYPE, a genotype (name or JSON) to
# use instead of the one the lambda table found. TEACHER_CODEC=0 skips the teacher's own
# codec (the sweep's upper reference; about as long as stage 2 again). TEACHER_ENSEMBLE=1
# trains the three members of the README's ensemble (FastNet, a wider FastNet,
# EfficientNet-Lite0 from ImageNet weights: about 5 h on a 2-core CPU; TEACHER_EPOCHS does
# not apply) and joins them with `rkdsc models ensemble` as the teacher: the only teacher
# here above 92%.
set -euo pipefail

# The braces make bash read the whole script before running any of it, so that editing the
# file during a reproduction of hours (a git pull, say) cannot change the run in progress.
{
RUNS=${1:-runs/reproduce}
RKDSC=${RKDSC:-rkdsc}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-30}
CODEC_EPOCHS=${CODEC_EPOCHS:-12}
LAMBDAS=${LAMBDAS:-0,0.1,0.25}
LAMBDA=${LAMBDA:-0.1}
EVAL_SEEDS=${EVAL_SEEDS:-2}
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1}
CE_EPOCHS=${CE_EPOCHS:-$((STUDENT_EPOCHS + CODEC_EPOCHS))}
SWEEP_LIMIT=${SWEEP_LIMIT:-2000}
TEACHER_CODEC=${TEACHER_CODEC:-1}
TEACHER_ENSEMBLE=${TEACHER_ENSEMBLE:-0}

stage() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%SZ)"; }

stage "1/7 teacher"
if [[ -z "${TEACHER:-}" && "$TEACHER_ENSEMBLE" == 1 ]]; then
    # The three members of the README's 92.13% ensemble, each resumable, then joined.
    "$RKDSC" train teacher --out "$RUNS/teacher-fastnet"
    "$RKDSC" train teacher --out "$RUNS/teacher-fastnet-wide" --widths 128,384,384 --epochs 16
    "$RKDSC" train teacher --out "$RUNS/teacher-efficientnet" --model efficientnet-lite0
    if [[ ! -f "$RUNS/teacher/teacher.json" ]]; then
        "$RKDSC" models ensemble "$RUNS/teacher-fastnet/teacher" \
            "$RUNS/teacher-fastnet-wide/teacher" "$RUNS/teacher-efficientnet/teacher" \
            --out "$RUNS/teacher/teacher"
    fi
    TEACHER="$RUNS/teacher/teacher"
elif [[ -z "${TEACHER:-}" ]]; then
    "$RKDSC" train teacher --out "$RUNS/teacher" ${TEACHER_EPOCHS:+--epochs "$TEACHER_EPOCHS"}
    TEACHER="$RUNS/teacher/teacher"
fi

stage "2/7 teacher-output cache"
if [[ ! -f "$RUNS/teacher-cache.json" ]]; then
    "$RKDSC" train cache-teacher --teacher "$TEACHER" --out "$RUNS/teacher-cache"
else  # a finished cache is kept, but only for the teacher it was made from
    manifest="${TEACHER%.json}"
    manifest="${manifest%.safetensors}.json"
    if ! python3 - "$RUNS/teacher-cache.json" "$manifest" <<'PY'
import json, sys
cache, teacher = (json.load(open(path)) for path in sys.argv[1:])
built = cache["teacher"]
same = built["weights_sha256"] == teacher["weights_sha256"]
# the config too (a logit scale), where the cache records it
sys.exit(not (same and built.get("config", teacher.get("config")) == teacher.get("config")))
PY
    then
        echo "error: $RUNS/teacher-cache holds the outputs of another teacher than $TEACHER;" \
            "use a new run folder" >&2
        exit 2
    fi
fi

stage "3/7 KDL-DARTS: plain DARTS and one search per lambda, each genotype trained alike"
if [[ -z "${GENOTYPE:-}" ]]; then
    for seed in $SEARCH_SEEDS; do  # protocol seeds run from the search seed upwards
        "$RKDSC" nas sweep --out "$RUNS/nas$([[ $seed == 0 ]] || echo "-seed$seed")" \
            --teacher-cache "$RUNS/teacher-cache" --lambdas "$LAMBDAS" --eval-seeds "$EVAL_SEEDS" \
            --seed "$seed"
    done
    GENOTYPE="$RUNS/nas/kdl-darts_lambda-$LAMBDA/row.json"
fi

stage "4/7 stage 1: student KD from the teacher"
"$RKDSC" train student --teacher-cache "$RUNS/teacher-cache" --out "$RUNS/student" \
    --genotype "$GENOTYPE" --epochs "$STUDENT_EPOCHS"

stage "5/7 stage 2: CAT codec through the channel: RKD, stage-1-only, the teacher's own"
"$RKDSC" train codec --student "$RUNS/student/student" --teacher-cache "$RUNS/teacher-cache" \
    --out "$RUNS/rkd" --epochs "$CODEC_EPOCHS"
"$RKDSC" train codec --student "$RUNS/student/student" --teacher-cache "$RUNS/teacher-cache" \
    --out "$RUNS/stage1-only" --epochs "$CODEC_EPOCHS" --no-teacher-targets
sweep_links=(--weights "rkd=$RUNS/rkd/weights" --weights "stage1-only=$RUNS/stage1-only/weights"
    --weights "ce-only=$RUNS/ce-only/weights")
if [[ "$TEACHER_CODEC" == 1 ]]; then
    "$RKDSC" train codec --student "$TEACHER" --teacher-cache "$RUNS/teacher-cache" \
        --out "$RUNS/teacher-codec" --epochs "$CODEC_EPOCHS"
    sweep_links+=(--weights "teacher=$RUNS/teacher-codec/weights")
fi

stage "6/7 baseline: the same student trained end to end with cross-entropy only"
"$RKDSC" train link --out "$RUNS/ce-only" --epochs "$CE_EPOCHS" \
    --genotype "$GENOTYPE"

stage "7/7 accuracy vs SNR"
"$RKDSC" eval sweep --limit "$SWEEP_LIMIT" --out "$RUNS/sweep" "${sweep_links[@]}"
echo "done: $RUNS/sweep/sweep.csv and the plots beside it"
exit
}
