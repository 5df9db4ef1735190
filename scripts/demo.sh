#!/usr/bin/env bash
# The main job on bundled real exports: inspect, align and merge fine-tunings of one base with several methods,
# then run the merged model through ONNX Runtime via the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build Recycling.Cli -c Release -v quiet -nologo >/dev/null
recycle() { dotnet Recycling.Cli/bin/Release/net10.0/recycle.dll "$@"; }
fixtures=Recycling.Tests/Fixtures/torch-merge/transformer/default
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== align: three fine-tunings and their base (Identity-deduplicated LayerNorms, tied embedding)"
recycle align "$fixtures"/ft1.onnx "$fixtures"/ft2.onnx "$fixtures"/ft3.onnx --base "$fixtures"/base.onnx
for method in average task-arithmetic ties dare-ties; do
  echo "== merge --method $method"
  recycle merge "$fixtures"/ft1.onnx "$fixtures"/ft2.onnx "$fixtures"/ft3.onnx --base "$fixtures"/base.onnx \
    --method "$method" --lambda 0.7 --density 0.3 --drop-rate 0.5 --seed 1 -o "$out/$method.onnx"
done
echo "== economics: the seed's Table 1"
recycle economics table
