"""The npm ``centrifuge`` SDK the chat page ships (``make vendor-js``): the file is the one
recorded, at the version the Node tests run, with its license beside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "src" / "hubbub" / "web" / "static" / "vendor"


def test_the_vendored_sdk_is_the_recorded_file() -> None:
    record = json.loads((VENDOR / "centrifuge.json").read_text())
    assert record["name"] == "centrifuge" and record["file"] == "dist/centrifuge.js"
    body = (VENDOR / "centrifuge.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == record["sha256"]
    # The browser build defines the global the page uses, and loads nothing else.
    assert b"globalThis.Centrifuge=" in body and b"import(" not in body
    assert "MIT" in (VENDOR / "LICENSE").read_text()


def test_the_page_and_the_node_tests_run_the_same_sdk_version() -> None:
    record = json.loads((VENDOR / "centrifuge.json").read_text())
    lock = json.loads((ROOT / "tests" / "js" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/centrifuge"]["version"] == record["version"]
    assert lock["packages"]["node_modules/centrifuge"]["integrity"] == record["integrity"]
    makefile = (ROOT / "Makefile").read_text()
    assert f"CENTRIFUGE_JS_VERSION := {record['version']}\n" in makefile
