#!/usr/bin/env bash
# Installs what the test suite reads beyond the .NET SDK: the ONNX backend test corpus (Debian libonnx-testdata) and
# Fashion-MNIST (Debian dataset-fashion-mnist), which the ResNet18 zoo's data generator reads.
# Safe to run repeatedly; needs root (apt-get) only when something is missing.
set -euo pipefail
if [ ! -d /usr/share/libonnx-testdata/data ]; then
  echo "installing libonnx-testdata (ONNX backend test corpus) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libonnx-testdata >/dev/null
fi
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "installing dataset-fashion-mnist (Fashion-MNIST, read by the foundation zoo's data generator) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# WordNet 3.0 (Debian wordnet-base): MiniLmDataTests runs the MiniLM zoo's data generator on it.
if [ ! -f /usr/share/wordnet/data.noun ]; then
  echo "installing wordnet-base (WordNet 3.0 data files) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wordnet-base >/dev/null
fi
