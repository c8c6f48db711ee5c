"""The pure modules decide; they never touch the network, the disk store, the scheduler or locks.

Each module is imported in a fresh interpreter and the loaded modules are inspected. One exception:
`socket`. The stdlib's `email.utils` imports it at module level (for `make_msgid`'s `getfqdn()`), and every
module that reads or writes mail needs `email.utils` (`parsedate_to_datetime`, `getaddresses`); mail-parser
imports it too. So for `socket` we check who imported it — only `email/utils.py` may — and, statically,
that no pure module imports any of these names itself.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mailbot

PURE = ["models", "parse", "parse.headers", "parse.repair", "parse.addresses", "parse.flags", "parse.body",
        "parse.mail", "parse.quotes", "parse.htmltext", "parse.redact", "parse.secret_labels",
        "parse.secret_formats", "parse.secret_tables", "parse.charsets", "match",
        "decide.commands", "decide.command_specs", "decide.messages", "decide.ooo", "cases", "decide.policy",
        "decide.calendar", "render.templates", "render.compose", "decide.roles", "decide.authres", "text",
        "mailbox.imap.checkpoint", "decide.inbound", "decide.sweep", "decide.nudge", "decide.digest"]
FORBIDDEN = ["imapclient", "smtplib", "tinydb", "apscheduler", "socket", "filelock"]
PACKAGE = Path(mailbot.__file__).resolve().parent

PROBE = """
import importlib.abc, json, sys, traceback
FORBIDDEN = {forbidden!r}
importers = {{}}

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in FORBIDDEN and top not in importers:
            files = [f.filename for f in traceback.extract_stack()[:-1]
                     if not f.filename.startswith("<") and "importlib" not in f.filename]
            importers[top] = files[-1] if files else "?"
        return None

sys.meta_path.insert(0, Spy())
import {module}
print(json.dumps({{"loaded": sorted(n for n in FORBIDDEN if n in sys.modules), "importers": importers}}))
"""


def probe(module: str) -> dict[str, object]:
    code = PROBE.format(forbidden=FORBIDDEN, module=module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", PURE)
def test_pure_module_loads_no_io_library(name: str) -> None:
    result = probe(f"mailbot.{name}")
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    importers: dict[str, str] = result["importers"]  # type: ignore[assignment]
    assert loaded <= {"socket"}, f"mailbot.{name} pulls in {sorted(loaded - {'socket'})}: {importers}"
    if "socket" in loaded:
        assert Path(importers["socket"]).parts[-2:] == ("email", "utils.py"), importers


@pytest.mark.parametrize("name", PURE)
def test_pure_module_does_not_import_io_libraries_itself(name: str) -> None:
    path = PACKAGE / name.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")  # a package, or a module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN), f"{path.relative_to(PACKAGE.parent)} imports {sorted(imported & set(FORBIDDEN))}"


def test_the_probe_sees_an_io_module() -> None:
    # The check itself works: the store is not pure, and the probe says so.
    assert "tinydb" in probe("mailbot.store")["loaded"]  # type: ignore[operator]
