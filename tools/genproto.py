"""Regenerate rumor's protobuf and gRPC Python modules from proto/.

protoc emits top-level imports (``from gossip import message_pb2``); rumor ships
the modules inside ``rumor.wire.pb``, so the imports are rewritten to that
package. Used by ``make proto`` and by the test that checks the committed code
is current.

    python tools/genproto.py [OUTPUT_DIR]     (default: src/rumor/wire/pb)
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "src" / "rumor" / "wire" / "pb"
PACKAGE = "rumor.wire.pb"
PROTO_PACKAGES = ("gossip", "msp", "common", "orderer", "peer", "etcdraft", "etcdserverpb", "rumorpb")
_IMPORT = re.compile(r"^from (" + "|".join(PROTO_PACKAGES) + r")(\.?\S*) import ", re.MULTILINE)


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "__init__.py").write_text('"""Generated protobuf modules; run `make proto` to refresh."""\n')
        for path in sorted(Path(tmp).rglob("*.py*")):
            if path.name.endswith("_grpc.py") and "Stub" not in path.read_text():
                continue  # a proto file without a service gives an empty module
            rel = path.relative_to(tmp)
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub(lambda m: f"from {PACKAGE}.{m.group(1)}{m.group(2)} import ", path.read_text())
            target.write_text(text)
        for pkg in PROTO_PACKAGES:
            init = out_dir / pkg / "__init__.py"
            if init.parent.exists() and not init.exists():
                init.write_text("")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
