#!/usr/bin/env bash
# Fuzzes the ONNX reader with AFL++ through SharpFuzz.
#   scripts/fuzz.sh [EXECUTIONS] [WORK_FOLDER]        (defaults: 100000, artifacts/fuzz)
# Installs afl++ (apt) when missing and the sharpfuzz tool (dotnet-tools.json), publishes fuzz/Recycling.Fuzz in
# Release, instruments Recycling.Onnx.dll, seeds with fuzz/seeds (scripts/fuzz_seeds.py) and small torch-io fixtures,
# and runs afl-fuzz for about EXECUTIONS executions. Crashes land in WORK_FOLDER/findings/default/crashes; each
# one is replayed with `Recycling.Fuzz --replay` and should be copied to fuzz/regressions/ once fixed (the tests
# replay that folder). Only exceptions other than OnnxFormatException count as crashes.
set -euo pipefail
executions=${1:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${2:-$root/artifacts/fuzz}")
cd "$root"

if ! command -v afl-fuzz >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++
fi
dotnet tool restore >/dev/null

rm -rf "$work/bin" "$work/plain" "$work/findings" "$work/seeds"
mkdir -p "$work/seeds"
# plain: for replays (an instrumented assembly writes to AFL's shared memory and faults without it); bin: instrumented.
dotnet publish fuzz/Recycling.Fuzz -c Release -o "$work/plain" -v quiet -nologo
cp -r "$work/plain" "$work/bin"
dotnet tool run sharpfuzz "$work/bin/Recycling.Onnx.dll"

cp fuzz/seeds/*.onnx "$work/seeds/"
if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
  /usr/bin/python3 scripts/fuzz_seeds.py "$work/seeds" >/dev/null
fi
for fixture in cnn_default.onnx cnn_typed.onnx cnn_fp16_typed.onnx transformer_external.onnx; do
  cp "Recycling.Tests/Fixtures/torch-io/$fixture" "$work/seeds/"
done
dotnet "$work/plain/Recycling.Fuzz.dll" --replay "$work/seeds"

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
# -t: per-input timeout in ms (the .NET host starts once; inputs then run in-process through SharpFuzz's loop).
afl-fuzz -i "$work/seeds" -o "$work/findings" -t 5000 -m none -E "$executions" -- dotnet "$work/bin/Recycling.Fuzz.dll" || true

stats="$work/findings/default/fuzzer_stats"
grep -E '^(execs_done|execs_per_sec|run_time|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|edges_found)' "$stats"
crashes=$(find "$work/findings/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
if [ "$crashes" -gt 0 ]; then
  for crash in "$work/findings/default/crashes"/id:*; do
    dotnet "$work/plain/Recycling.Fuzz.dll" --replay "$crash" || true
  done
  exit 1
fi
