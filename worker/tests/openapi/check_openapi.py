#!/usr/bin/env python3
"""Validates an OpenAPI document with openapi-spec-validator, as OpenAPI 3.1.

    python3 worker/tests/openapi/check_openapi.py DOCUMENT.json

Driven by worker/tests/openapi.rs, which fetches the coordinator's
/openapi.json. Exit status: 0 valid, 1 invalid (every error printed), 2 the
validator is missing (install it with .ci/install).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TOOLS_PYTHON = Path(os.environ.get("WEFT_TOOLS_DIR", Path.home() / ".cache" / "weft")) / "venv" / "bin" / "python"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"

try:
    from openapi_spec_validator import OpenAPIV31SpecValidator
except ImportError as e:  # Re-run under the tools venv when it has the package.
    if TOOLS_PYTHON.exists() and Path(sys.executable) != TOOLS_PYTHON and not os.environ.get("WEFT_CHECK_OPENAPI_REEXEC"):
        os.environ["WEFT_CHECK_OPENAPI_REEXEC"] = "1"
        os.execv(str(TOOLS_PYTHON), [str(TOOLS_PYTHON), __file__, *sys.argv[1:]])
    print(
        f"check_openapi: missing Python package ({e.name}). Install the pinned tools with\n"
        f"  .ci/install   (or: {TOOLS_PYTHON.parent / 'pip'} install -r {REQUIREMENTS})",
        file=sys.stderr,
    )
    sys.exit(2)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    doc = json.loads(Path(sys.argv[1]).read_text())
    version = str(doc.get("openapi", ""))
    if not version.startswith("3.1."):
        print(f"check_openapi: `openapi` is {version!r}, not 3.1.x", file=sys.stderr)
        return 1
    try:
        errors = list(OpenAPIV31SpecValidator(doc).iter_errors())
    except Exception as e:  # e.g. a $ref to nowhere: the validator raises
        print(f"check_openapi: the validator failed: {type(e).__name__}: {str(e)[:500]}", file=sys.stderr)
        return 1
    for err in errors:
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        print(f"check_openapi: at {path}: {err.message[:500]}", file=sys.stderr)
    if errors:
        print(f"check_openapi: {len(errors)} error(s)", file=sys.stderr)
        return 1
    ops = sum(
        1
        for item in doc.get("paths", {}).values()
        for m in item
        if m in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )
    print(f"check_openapi: valid OpenAPI {version}: {len(doc.get('paths', {}))} paths, {ops} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
