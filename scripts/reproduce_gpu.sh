#!/usr/bin/env bash
# The RKD-SC recipe on one GPU, with the stages that do not depend on each other running
# side by side (small models leave a GPU mostly idle, so several processes share it):
#
#   lane 1: three teachers at once -> their ensemble -> its output cache -> stage 1 ->
#           stage 2 three times at once (RKD, stage-1-only, the teacher's own codec)
#   lane 2: the cross-entropy-only baseline (no teacher), from the start
#
#   RKDSC_DATA_DIR=... scripts/reproduce_gpu.sh [RUNS_DIR]     (default runs/gpu)
#
# Each command is one of `scripts/reproduce.sh`'s, with the knobs below, but the student's
# genotype is the published DARTS_V2 (no KDL-DARTS search here). Every stage checkpoints
# each epoch and resumes when the script runs again with the same RUNS_DIR (with the same
# knobs: another teacher or student needs a new RUNS_DIR). Logs are appended to
# RUNS/logs/NAME.log, a line per start, end or failure to RUNS/stages.log. A failed stage
# stops the script and every stage still running (so does ending the script: its exit
# ends them); one run at a time per RUNS_DIR (a lock). Knobs (environment):
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
run() {
    local name=$1; shift
    note "start $name"
    ( "$@" 9>&- >> "$RUNS/logs/$name.log" 2>&1 && note "done $name" ||
        { note "FAILED $name (see $RUNS/logs/$name.log)"; exit 1; } ) &
    pids+=($!)
}
join() {  # wait for every stage started since the last join; fail if one failed
    local failed=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    pids=()
    [[ $failed == 0 ]] || { note "stopping: a stage failed"; exit 1; }
}
stop_all() {  # on any exit: end the stages still running (none after a full run)
    local pid kids
    for pid in "${pids[@]}" $ce_pid; do
        kids=$(pgrep -P "$pid" || true)
        kill "$pid" 2> /dev/null || true  # the stage's shell first, so that it logs nothing
        [[ -z $kids ]] || kill $kids 2> /dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 143' TERM INT
student=(--genotype darts_v2 --c "$STUDENT_C" --layers "$STUDENT_LAYERS")

note "device $RKDSC_DEVICE"
run data "$RKDSC" data prepare  # decode the dataset once, before the stages that read it
join

run ce-only "$RKDSC" train link --out "$RUNS/ce-only" --epochs "$CE_EPOCHS" "${student[@]}"
ce_pid=$!; pids=()

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
pids+=("$ce_pid")
join

ce_pid=
if [[ "$SWEEP_LIMIT" != 0 ]]; then
    run sweep "$RKDSC" eval sweep --limit "$SWEEP_LIMIT" --out "$RUNS/sweep" "${sweep_links[@]}"
    join
fi
note "all done: $RUNS"
exit
}
