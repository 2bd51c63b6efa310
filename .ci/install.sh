#!/usr/bin/env bash
# Installs everything tf_precrop needs on a fresh Debian machine (as root): Debian's offline Fashion-MNIST
# files and Bazel, then the package with every extra and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
apt-get update -qq
apt-get install -y -qq dataset-fashion-mnist bazel-bootstrap >/dev/null
python -m pip install -q -e ".[all,test]"
