#!/usr/bin/env bash
# Runs issue 19's GPU measurements on the lent GPU machine (no .NET there). Here, first:
#   ../shared/tools/device-pack.sh Recycling.Bench -p:DevicePack=true     # -> .device/app.tar.xz (about 34 MB)
# then, through the device tool, with carry [".device"] and a timeout of about 540 s:
#   bash scripts/bench/gpu-device-run.sh
# Results come back as $OUT/gpu-h200.json (+ .log, env.txt). Rehearse anywhere without a GPU (figures meaningless):
#   dotnet run -c Release --project Recycling.Bench -- gpu --size 64KiB --counts 2,4 --cpu-accelerator
set -o pipefail
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 # the machine may have no ICU
out=${OUT:-/tmp/gpu-bench-out}; mkdir -p "$out" /tmp/app /tmp/cudalib
tar xJf .device/app.tar.xz -C /tmp/app || { echo "no .device/app.tar.xz: run device-pack first" >&2; exit 3; }
# ILGPU opens "libcuda.so"; some driver mounts only register libcuda.so.1.
lib=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -z "$lib" ] && lib=$(ls /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null | head -1)
[ -n "$lib" ] && ln -sf "$lib" /tmp/cudalib/libcuda.so
export LD_LIBRARY_PATH=/tmp/cudalib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
{ echo "libcuda: $lib"; nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv
  echo "cores: $(nproc)"; free -g | head -2; } | tee "$out/env.txt"
RECYCLING_BENCH_DIR=/tmp/e2e timeout 450 /tmp/app/Recycling.Bench gpu --size 512MiB --counts 2,4,8 --e2e-size 1GiB \
  --json "$out/gpu-h200.json" 2>&1 | tee "$out/gpu-h200.log"
