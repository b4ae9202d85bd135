#!/usr/bin/env bash
# Create benchmarks/.venv-anomalib: an isolated venv holding anomalib 2.7.x, the measured PEER
# of sklearn_memad's benchmark (benchmarks/anomalib_peer.py runs inside it). anomalib is never
# imported by sklearn_memad itself.
#
# torch / torchvision are pinned to the releases that lie on this machine's disk
# (torch 2.14.1, torchvision 0.29.1); an extra constraints file keeps pip from ever resolving
# another torch (which would download gigabytes). The machine-wide /etc/xdg/pip constraints
# stay in force as well.
#
# Idempotent: exits early when the venv already imports the three anomalib torch models.
#   bash benchmarks/setup_anomalib.sh            # set up (or check) the venv
#   FORCE=1 bash benchmarks/setup_anomalib.sh    # rebuild from scratch
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-anomalib"
PY="${PYTHON:-python3.11}"
ANOMALIB_SPEC="${ANOMALIB_SPEC:-anomalib==2.7.*}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"

check() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import anomalib, torch, torchvision
assert anomalib.__version__.startswith("2.7"), anomalib.__version__
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
from anomalib.models.image.padim.torch_model import PadimModel
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from anomalib.models.image.dfkde.torch_model import DfkdeModel
import psutil
EOF
}

if [ "${FORCE:-0}" != "1" ] && check; then
    echo "anomalib venv already set up: $VENV"
    "$VENV/bin/python" -c "import anomalib, torch; print('anomalib', anomalib.__version__, '| torch', torch.__version__)"
    exit 0
fi

if [ "${FORCE:-0}" = "1" ]; then
    rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

# Never let pip pick another torch: pin both on top of the machine-wide cap.
PIN="$VENV/torch-pin.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > "$PIN"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip wheel setuptools
"${PIP[@]}" install -c "$PIN" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# anomalib's base dependency set (lightning, torchmetrics, timm, kornia, FrEIA, ...): the torch
# models import anomalib.data / anomalib.models.components, which import most of it.
"${PIP[@]}" install -c "$PIN" "$ANOMALIB_SPEC" psutil

# Refuse to finish with a torch other than the pinned one.
"$VENV/bin/python" -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$TORCH_VERSION' else 'torch ' + v + ' != $TORCH_VERSION')"

if check; then
    "$VENV/bin/python" -c "import anomalib, torch; print('anomalib', anomalib.__version__, '| torch', torch.__version__)"
    echo "anomalib venv ready: $VENV"
else
    echo "anomalib venv set up but the torch models do not import; see:" >&2
    "$VENV/bin/python" -c "from anomalib.models.image.padim.torch_model import PadimModel" >&2 || true
    exit 1
fi
