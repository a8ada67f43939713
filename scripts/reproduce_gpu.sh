#!/usr/bin/env bash
# The RKD-SC recipe on one GPU, with the stages that do not depend on each other running
# side by side (small models leave a GPU mostly idle, so several processes share it):
#
#   lane 1: three teachers at once -> their ensemble (or TEACHER, a trained teacher) -> its
#           output cache -> stage 1 -> stage 2 three times at once (RKD, stage-1-only, the
#           teacher's own codec)
#   lane 2: the cross-entropy-only baseline (no teacher), from the start
#
#   RKDSC_DATA_DIR=... scripts/reproduce_gpu.sh [RUNS_DIR]     (default runs/gpu)
#
# Each command is one of `scripts/reproduce.sh`'s, with the knobs below, but the student's
# genotype is the published DARTS_V2 (no KDL-DARTS search here). Every stage checkpoints
# each epoch and resumes when the script runs again with the same RUNS_DIR (with the same
# knobs: another teacher or student needs a new RUNS_DIR). Logs are appended to
# RUNS/logs/NAME.log, a line per start, end or failure to RUNS/stages.log. A failed stage
# stops the script and every stage still running as soon as it fails (so does ending the
# script: its exit ends them); one run at a time per RUNS_DIR (a lock). Knobs (environment):
# TEACHER, a teacher checkpoint (e.g. an ensemble from `rkdsc models ensemble`) to distil
# from instead of training the three teachers;
# STUDENT_C (40) and STUDENT_LAYERS (5): the DARTS_V2 student's width and cells, for RKD and
# CE-only alike; STUDENT_EPOCHS (30), CODEC_EPOCHS (12), CE_EPOCHS (their sum: the RKD
# link's whole budget), RESNET_EPOCHS (30, the ResNet-18 preset), TEACHER_CODEC (1),
# SWEEP_LIMIT (1000; 0 skips the sweep), RKDSC_DEVICE (cuda), THREADS (CPU threads per
# process, 2). Evaluation runs on RKDSC_DEVICE too: the links' eval tables (1,000 images
# each, written as each link finishes) and the final sweep.
set -euo pipefail
{
RUNS=${1:-runs/gpu}
RKDSC=${RKDSC:-rkdsc}
STUDENT_C=${STUDENT_C:-40}
STUDENT_LAYERS=${STUDENT_LAYERS:-5}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-30}
CODEC_EPOCHS=${CODEC_EPOCHS:-12}
CE_EPOCHS=${CE_EPOCHS:-$((STUDENT_EPOCHS + CODEC_EPOCHS))}
RESNET_EPOCHS=${RESNET_EPOCHS:-30}
TEACHER_CODEC=${TEACHER_CODEC:-1}
SWEEP_LIMIT=${SWEEP_LIMIT:-1000}
export RKDSC_DEVICE=${RKDSC_DEVICE:-cuda}
export OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$RUNS/logs"
exec 9> "$RUNS/.lock"  # held by this script alone (the stages do not inherit it)
if command -v flock > /dev/null && ! flock -n 9; then
    echo "error: $RUNS is in use by another run of this script" >&2
    exit 1
fi

note() { printf '%s %s\n' "$(date -u +%H:%M:%SZ)" "$*" | tee -a "$RUNS/stages.log"; }
# run NAME CMD...: one stage in the background, its output appended to RUNS/logs/NAME.log
pids=() ce_pid=
stop() { note "stopping: a stage failed"; exit 1; }
run() {
    local name=$1; shift
    note "start $name"
    ( "$@" 9>&- >> "$RUNS/logs/$name.log" 2>&1 && note "done $name" ||
        { note "FAILED $name (see $RUNS/logs/$name.log)"; exit 1; } ) &
    pids+=($!)
}
# join: wait for every stage started since the last join, watching the CE lane too, and
# stop at the first failure (polled: a failed teacher does not wait for the others to end)
join() {
    local pid left
    while ((${#pids[@]})); do
        left=()
        for pid in "${pids[@]}"; do  # `wait PID` gives an ended stage's status once
            if kill -0 "$pid" 2> /dev/null; then left+=("$pid"); else wait "$pid" || stop; fi
        done
        if [[ -n $ce_pid ]] && ! kill -0 "$ce_pid" 2> /dev/null; then
            wait "$ce_pid" || stop
            ce_pid=
        fi
        pids=("${left[@]}")
        if ((${#pids[@]})); then sleep 1; fi
    done
}
stop_all() {  # on any exit: end the stages still running (none after a full run)
    local pid kids
    for pid in "${pids[@]}" $ce_pid; do  # the stage's command: its shell's children
        kids=$(cat /proc/"$pid"/task/*/children 2> /dev/null || pgrep -P "$pid" || true)
        kill "$pid" 2> /dev/null || true  # the stage's shell first, so that it logs nothing
        [[ -z $kids ]] || kill $kids 2> /dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 143' TERM INT
student=(--genotype darts_v2 --c "$STUDENT_C" --layers "$STUDENT_LAYERS")

if [[ -n "${TEACHER:-}" && ! -f "${TEACHER%.safetensors}.json" ]]; then
    echo "error: TEACHER=$TEACHER is not a teacher checkpoint (no ${TEACHER%.safetensors}.json)" >&2
    exit 2
fi
note "device $RKDSC_DEVICE"
run data "$RKDSC" data prepare  # decode the dataset once, before the stages that read it
join

run ce-only "$RKDSC" train link --out "$RUNS/ce-only" --epochs "$CE_EPOCHS" "${student[@]}"
ce_pid=$!; pids=()

if [[ -z "${TEACHER:-}" ]]; then
    run teacher-fastnet "$RKDSC" train teacher --out "$RUNS/teacher-fastnet"
    run teacher-fastnet-wide "$RKDSC" train teacher --out "$RUNS/teacher-fastnet-wide" \
        --widths 128,384,384 --epochs 16
    run teacher-resnet18 "$RKDSC" train teacher --out "$RUNS/teacher-resnet18" \
        --model resnet18-cifar --epochs "$RESNET_EPOCHS"
    join
    TEACHER="$RUNS/teacher/teacher"
    if [[ ! -f "$TEACHER.json" ]]; then  # a finished ensemble is kept
        run ensemble "$RKDSC" models ensemble "$RUNS/teacher-fastnet/teacher" \
            "$RUNS/teacher-fastnet-wide/teacher" "$RUNS/teacher-resnet18/teacher" --out "$TEACHER"
        join
    fi
fi
if [[ ! -f "$RUNS/teacher-cache.json" ]]; then  # a finished cache is kept
    run cache-teacher "$RKDSC" train cache-teacher --teacher "$TEACHER" \
        --out "$RUNS/teacher-cache" --batch-size 1024
    join
fi

run student "$RKDSC" train student --teacher-cache "$RUNS/teacher-cache" --out "$RUNS/student" \
    "${student[@]}" --epochs "$STUDENT_EPOCHS"
join

codec=(--teacher-cache "$RUNS/teacher-cache" --epochs "$CODEC_EPOCHS")
run rkd "$RKDSC" train codec --student "$RUNS/student/student" --out "$RUNS/rkd" "${codec[@]}"
run stage1-only "$RKDSC" train codec --student "$RUNS/student/student" --out "$RUNS/stage1-only" \
    "${codec[@]}" --no-teacher-targets
sweep_links=(--weights "rkd=$RUNS/rkd/weights" --weights "stage1-only=$RUNS/stage1-only/weights"
    --weights "ce-only=$RUNS/ce-only/weights")
if [[ "$TEACHER_CODEC" == 1 ]]; then
    run teacher-codec "$RKDSC" train codec --student "$TEACHER" --out "$RUNS/teacher-codec" \
        "${codec[@]}"
    sweep_links+=(--weights "teacher=$RUNS/teacher-codec/weights")
fi
[[ -z $ce_pid ]] || pids+=("$ce_pid")
ce_pid=
join

if [[ "$SWEEP_LIMIT" != 0 ]]; then
    run sweep "$RKDSC" eval sweep --limit "$SWEEP_LIMIT" --out "$RUNS/sweep" "${sweep_links[@]}"
    join
fi
note "all done: $RUNS"
exit
}
