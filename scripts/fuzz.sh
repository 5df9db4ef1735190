#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with AFL++ through SharpFuzz: onnx (models), npy, npz, csv (CSV/TSV data) and
# json (certificate files, zoo manifests).
#   scripts/fuzz.sh [EXECUTIONS] [WORK_FOLDER] [TARGET...]     (defaults: 100000, artifacts/fuzz, every target)
# Installs afl++ (apt) when missing and the sharpfuzz tool (dotnet-tools.json), publishes fuzz/Recycling.Fuzz in
# Release, instruments Recycling.Onnx.dll and Recycling.MLNet.dll, seeds each target with fuzz/seeds/TARGET (onnx also
# with scripts/fuzz_seeds.py and small torch-io fixtures), and runs afl-fuzz for about EXECUTIONS executions per
# target. Crashes land in WORK_FOLDER/findings/TARGET/default/crashes; each one is replayed with
# `Recycling.Fuzz --target TARGET --replay` and should be copied to fuzz/regressions/TARGET/ once fixed (the tests
# replay that folder). Only exceptions other than the reader's own error (OnnxFormatException for onnx,
# RecyclingException for the others) count as crashes. Without AFL++, `Recycling.Fuzz --target T --mutate N SEEDS`
# runs the harness's own mutation loop instead.
set -euo pipefail
executions=${1:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${2:-$root/artifacts/fuzz}")
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx npy npz csv json)
cd "$root"

if ! command -v afl-fuzz >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++
fi
dotnet tool restore >/dev/null

rm -rf "$work/bin" "$work/plain" "$work/findings" "$work/seeds"
# plain: for replays (an instrumented assembly writes to AFL's shared memory and faults without it); bin: instrumented.
dotnet publish fuzz/Recycling.Fuzz -c Release -o "$work/plain" -v quiet -nologo
cp -r "$work/plain" "$work/bin"
dotnet tool run sharpfuzz "$work/bin/Recycling.Onnx.dll"
dotnet tool run sharpfuzz "$work/bin/Recycling.MLNet.dll"

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
mkdir -p "$work/findings"
status=0
for target in "${targets[@]}"; do
  seeds="$work/seeds/$target"
  mkdir -p "$seeds"
  cp fuzz/seeds/"$target"/* "$seeds/"
  if [ "$target" = onnx ]; then
    if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
      /usr/bin/python3 scripts/fuzz_seeds.py "$seeds" >/dev/null
    fi
    for fixture in cnn_default.onnx cnn_typed.onnx cnn_fp16_typed.onnx transformer_external.onnx; do
      cp "Recycling.Tests/Fixtures/torch-io/$fixture" "$seeds/"
    done
  fi
  dotnet "$work/plain/Recycling.Fuzz.dll" --target "$target" --replay "$seeds"

  # -t: per-input timeout in ms (the .NET host starts once; inputs then run in-process through SharpFuzz's loop).
  afl-fuzz -i "$seeds" -o "$work/findings/$target" -t 5000 -m none -E "$executions" -- dotnet "$work/bin/Recycling.Fuzz.dll" --target "$target" || true

  stats="$work/findings/$target/default/fuzzer_stats"
  echo "== $target"
  grep -E '^(execs_done|execs_per_sec|run_time|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|edges_found)' "$stats" || echo "no statistics: afl-fuzz did not run"
  crashes=$(find "$work/findings/$target/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
  if [ "$crashes" -gt 0 ]; then
    for crash in "$work/findings/$target/default/crashes"/id:*; do
      dotnet "$work/plain/Recycling.Fuzz.dll" --target "$target" --replay "$crash" || true
    done
    status=1
  fi
done
exit $status
