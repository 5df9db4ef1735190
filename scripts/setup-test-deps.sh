#!/usr/bin/env bash
# Installs what the test suite reads beyond the .NET SDK: the ONNX backend test corpus (Debian libonnx-testdata).
# Safe to run repeatedly; needs root (apt-get) only when something is missing.
set -euo pipefail
if [ ! -d /usr/share/libonnx-testdata/data ]; then
  echo "installing libonnx-testdata (ONNX backend test corpus) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libonnx-testdata >/dev/null
fi
# WordNet 3.0 (Debian wordnet-base): MiniLmDataTests runs the MiniLM zoo's data generator on it.
if [ ! -f /usr/share/wordnet/data.noun ]; then
  echo "installing wordnet-base (WordNet 3.0 data files) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wordnet-base >/dev/null
fi
