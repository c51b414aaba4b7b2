#!/usr/bin/env bash
# Every GPU check of grokrun in one command, one report: CUDA graphs against eager (every filter, one seed and a
# stack), the published modular EMA run with graphs, stacked seeds at 1 to 64 with and without graphs (modular,
# mnist, parity), a 16-seed comparison's wall-clock, 64 stacked seeds of the published EMA run to 95% against
# one, the IMDb step beside the straightforward one, torch.compile against eager and graphs, and every task with
# every filter on the device. Sized for about 6 minutes on an H100-class card.
#
#     bash scripts/gpu_check.sh                      # on the GPU machine (PYTHONPATH=. is set here)
#     bash scripts/gpu_check.sh --device cpu         # the same checks at small sizes: checks this script (a test)
#     bash scripts/gpu_check.sh --out DIR            # default /tmp/grokrun-gpu-check; the report is DIR/report.md
#
# Each check runs under its own time limit and the next runs whatever the last did; the report gives each
# command, its exit status, its seconds and its output. Exit status 1 if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
device=cuda
out=/tmp/grokrun-gpu-check
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: bash scripts/gpu_check.sh [--device cuda|cpu] [--out DIR]" >&2; exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "--device must be cuda or cpu, got $device" >&2; exit 2 ;; esac
rm -rf "$out" && mkdir -p "$out" || exit 2
report="$out/report.md"
py=${PYTHON:-python3}
failed=0

if [ "$device" = cuda ]; then  # the sizes each check runs at
    graph_steps=300; seeds_list=1,8,32,64; bench="--steps 10 --rounds 3"; limit=150
    tiny=(); compare_seeds=0-15; compare_steps=2000; stack_seeds=0-63; stop_steps=2000; imdb="--steps 10 --rounds 3"
    compile_args="--tasks modular,mnist"
else
    graph_steps=20; seeds_list=1,2; bench="--steps 2 --rounds 1"; limit=120
    tiny=(--p 11 --width 32 --layers 1 --heads 2 --batch-size 32 --eval-every 5); compare_seeds=0-1
    compare_steps=10; stack_seeds=0-1; stop_steps=20; imdb="--steps 1 --rounds 1 --seq-len 50"; compile_args="--tasks mnist --steps 2 --rounds 1 --warm 2"
fi

check() {  # check TITLE SECONDS COMMAND...: run it, append it to the report
    local title="$1" seconds="$2"; shift 2
    echo "== $title" >&2
    local t0=$SECONDS
    timeout "$seconds" "$@" > "$out/step.log" 2>&1
    local rc=$?
    local took=$((SECONDS - t0))
    [ $rc -eq 0 ] || failed=1
    {
        echo "## $title"
        echo
        echo "\`$*\` — exit $rc$([ $rc -eq 124 ] && echo " (over its ${seconds} s)"), ${took} s"
        echo
        echo '```'
        grep -v -e '^USDT:' -e 'gpuGetDeviceCount' -e 'cpp_extension.py' "$out/step.log" | tail -60
        echo '```'
        echo
    } >> "$report"
    echo "   exit $rc, ${took} s" >&2
}

{
    echo "# grokrun GPU check ($device)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo '```'
    $py -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA', '|', torch.get_num_threads(), 'CPU threads')"
    echo '```'
    echo
} > "$report"

check "CUDA graphs against eager: every filter, one seed and four; the published EMA run with graphs" "$limit" \
    $py scripts/check_graphs.py --device "$device" --steps "$graph_steps" --out "$out/graphs"
for task in modular mnist parity; do
    check "stacked seeds, $task: ms per run-step at $seeds_list seeds, eager and graphs" "$limit" \
        $py scripts/bench_batched.py --task "$task" --device "$device" --seeds-list "$seeds_list" $bench --cuda-graph
done
check "compare --task modular --filter ema --seeds $compare_seeds (--max-steps $compare_steps): wall-clock" "$limit" \
    $py -m grokrun compare --task modular --filter ema --seeds "$compare_seeds" --max-steps "$compare_steps" \
    "${tiny[@]}" --device "$device" --quiet --out "$out/compare"
check "the published EMA run to 95%: seed 0 alone" "$limit" \
    $py -m grokrun train --task modular --filter ema --seed 0 --stop-at-acc 0.95 --max-steps "$stop_steps" "${tiny[@]}" \
    --device "$device" $([ "$device" = cuda ] && echo --cuda-graph on) --out "$out/alone"
check "the published EMA run to 95%: seeds $stack_seeds stacked" "$limit" \
    $py -m grokrun train --task modular --filter ema --seeds "$stack_seeds" --stop-at-acc 0.95 --max-steps "$stop_steps" \
    "${tiny[@]}" --device "$device" $([ "$device" = cuda ] && echo --cuda-graph on) --out "$out/stacked"
check "the IMDb step (LSTM, batch 50) beside the straightforward one" "$limit" \
    $py scripts/bench_train.py --task imdb --device "$device" $imdb
check "torch.compile against eager (and CUDA graphs on CUDA)" "$limit" \
    $py scripts/bench_compile.py --device "$device" $compile_args
if [ "$device" = cuda ]; then
    check "every task with every filter on the device" "$limit" \
        $py scripts/check_device.py --device cuda --skip-published --out "$out/device"
fi

echo "report: $report" >&2
[ $failed -eq 0 ] && echo "all checks passed" >&2 || echo "some checks failed: see the report" >&2
exit $failed
