#!/usr/bin/env bash
# The install routes, checked as a user meets them, from a folder outside the repository:
#  1. packs the `recycle` tool (this machine's platform only, to keep CI short) and the libraries into a local source;
#  2. installs the tool into a temporary tool path and runs eval, run, probe, merge (and --tune), finetune and demo on the zoo;
#  3. builds a console project that references only the Recycling.MLNet package and runs every ```csharp block of
#     README.md, docs/*.md and the package READMEs, unchanged (each block is one method; `data` comes from snippets/).
# Exits non-zero on the first failure. Usage: bash scripts/check-install.sh (KEEP=1 keeps its temporary folder).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/recycling-install-XXXXXX)
rid=$(dotnet --info | awk '/^ *RID:/ {print $2; exit}')
# A version of its own, so neither NuGet's cache nor an earlier install can stand in for this build; its cached
# copies are removed on exit.
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' "$repo/Directory.Build.props")-check.$(date +%s)
cache=${NUGET_PACKAGES:-$HOME/.nuget/packages}
cleanup() {
  rm -rf "$cache/recycle/$version" "$cache/recycle.$rid/$version" "$cache/recycling.onnx/$version" "$cache/recycling.mlnet/$version"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
feed=$work/feed tools=$work/tools run=$work/run
mkdir -p "$feed" "$run"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
step() { echo "== install check: $*"; }

step "pack recycle ($rid) and the libraries"
for p in Recycling.Onnx Recycling.MLNet Recycling.Training; do
  dotnet pack "$repo/$p" -c Release -o "$feed" -nologo -v quiet -p:Version="$version" >/dev/null
done
dotnet pack "$repo/Recycling.Cli" -c Release -o "$feed" -nologo -v quiet -p:Version="$version" \
  -p:ToolPackageRuntimeIdentifiers="$rid" -p:RuntimeIdentifiers="$rid" >/dev/null
ls -l "$feed"

step "dotnet tool install --tool-path"
dotnet tool install --tool-path "$tools" --add-source "$feed" recycle --version "$version" >/dev/null
recycle() { "$tools/recycle" "$@"; }

cd "$run"
models=$repo/models
targets=("$models"/cnn_target_diwa0[0-3].onnx)
step "recycle --help, merge --help"
recycle --help >/dev/null
recycle merge --help | grep -q 'θ0 + λ Σ wᵢτᵢ'
step "recycle merge (task arithmetic, λ = 1/4)"
recycle merge "${targets[@]}" --base "$models/cnn_base.onnx" --method task-arithmetic --lambda 0.25 -o merged.onnx
step "recycle merge past the task-vector threshold warns"
recycle merge "${targets[@]}" --base "$models/cnn_base.onnx" --method dare -o dare.onnx 2>warning.txt
grep -q 'warning: the merged task vector is' warning.txt
step "recycle merge --tune (candidates merged in memory, scored through the package's ONNX Runtime)"
recycle merge "${targets[@]}" --base "$models/cnn_base.onnx" --method task-arithmetic --tune lambda=0:1 --tune-points 3 --tune-rounds 0 \
  --val "$models/data/val" -o tuned-ta.onnx --json >tune.json
grep -q '"chosen"' tune.json && test -s tuned-ta.tune.csv && test -s tuned-ta.tune.png
step "recycle eval"
recycle eval merged.onnx "$models/cnn_base.onnx" -d "$models/data/val" --json >eval.json
grep -q '"accuracy"' eval.json
step "recycle run"
# One blank 1x1x28x28 float32 image as .npy (format 1.0: magic, header length, header padded to 64 bytes).
header="{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 28, 28), }"
header=$(printf '%-117s' "$header")
{ printf '\x93NUMPY\x01\x00\x76\x00%s\n' "$header"; head -c $((784 * 4)) /dev/zero; } >blank.npy
recycle run merged.onnx --input blank.npy -o outputs
test -s outputs/logits.npy && test -s outputs/features.npy
step "recycle probe"
recycle probe "$models/cnn_base.onnx" -d "$models/data/probe_train" --test "$models/data/val" >probe.txt
grep -q cnn_base probe.txt
step "recycle finetune (TorchSharp's natives load from the tool package)"
recycle finetune "$models/cnn_target_diwa00.onnx" -d "$models/data/val" --steps 1 --batch-size 8 -o tuned.onnx >finetune.txt
test -s tuned.onnx

step "recycle demo finds the zoo in the tool package"
# The whole study takes a minute or more; an architecture the zoo lacks shows which zoo.json it read, at once.
if recycle demo --arch none -o report 2>demo.txt; then echo "demo --arch none succeeded"; exit 1; fi
grep -q "^error: --arch none: not in $tools/.*/models/zoo.json" demo.txt || { cat demo.txt; exit 1; }

step "a console project referencing only Recycling.Training (which brings Recycling.MLNet and Recycling.Onnx) runs the docs' C#"
app=$work/app
mkdir -p "$app"
cp "$repo/scripts/snippets/Prelude.cs" "$app/"
cat >"$app/app.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <ImplicitUsings>enable</ImplicitUsings>
    <Nullable>disable</Nullable>
    <RestoreAdditionalProjectSources>$feed</RestoreAdditionalProjectSources>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Recycling.Training" Version="$version" />
  </ItemGroup>
</Project>
EOF
# One method per ```csharp block; its using lines become file-level usings of that block's file.
n=0
for doc in "$repo/README.md" "$repo"/docs/*.md "$repo"/Recycling.*/README.md; do
  awk -v out="$app/Snippet" -v base="$n" -v doc="${doc#"$repo"/}" '
    /^```csharp/ { inside = 1; k++; file = out (base + k) ".cs"; usings = ""; body = ""; next }
    inside && /^```/ {
      inside = 0
      printf "%s\ninternal static partial class Snippets\n{\n    // %s\n    public static void Run%d()\n    {\n%s    }\n}\n", usings, doc, base + k, body > file
      close(file); next
    }
    inside && /^using [A-Za-z.]+;/ { usings = usings $0 "\n"; next }
    inside { body = body "        " $0 "\n" }
  ' "$doc"
  n=$(ls "$app"/Snippet*.cs 2>/dev/null | wc -l)
done
{
  echo 'Directory.SetCurrentDirectory(args[0]);'
  for i in $(seq 1 "$n"); do echo "Console.WriteLine(\"-- snippet $i\"); Snippets.Run$i();"; done
} >"$app/Program.cs"
# The files the examples name: the zoo, and CNN fine-tunings as ft1..ft3 with their base.
cp -r "$models" "$run/models"
for i in 1 2 3; do cp "$models/cnn_target_diwa0$i.onnx" "$run/ft$i.onnx"; done
cp "$models/cnn_base.onnx" "$run/base.onnx"
dotnet build "$app" -c Release -nologo -v quiet -o "$app/bin" >"$work/app-build.txt" || { cat "$work/app-build.txt"; exit 1; }
find "$app/bin" -name 'libonnxruntime.so' -o -name 'libonnxruntime.dylib' -o -name 'onnxruntime.dll' | grep -q . \
  || { echo "no ONNX Runtime native library came with the packages"; exit 1; }
dotnet "$app/bin/app.dll" "$run"
echo "== install check: passed ($n C# examples)"
