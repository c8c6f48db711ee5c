"""Secrets in plain-text tables: a header row names the password column, or a cell holding a label is
followed by its value. Part of redact.py."""

from __future__ import annotations

import re

from mailbot.parse.secret_labels import MASK, _is_refusal

# --- tables: a header row names the password column, or a cell holding a label is followed by its value ---
_COLUMN_WORDS = frozenset((
    "用户名", "用户", "账号", "帐号", "账户", "帐户", "登录名", "登录账号", "主机", "主机名", "服务器", "地址", "ip", "ip地址",
    "端口", "系统", "备注", "说明", "名称", "类型", "数据库", "实例", "设备", "环境", "用途", "协议", "域名", "网络", "序号",
    "user", "username", "user name", "login", "account", "host", "hostname", "server", "address", "port",
    "system", "database", "db", "note", "notes", "remark", "remarks", "name", "type", "role", "device",
    "environment", "env", "url", "protocol", "instance", "service", "ssid", "network", "no", "#", "id",
))
_LABEL_CELL = re.compile(
    r"(?:[^\s:：]{0,8})?(?:密\s?码|口\s?令|密\s?钥|秘钥|验证码|动态口令|授权码|password|passwd|passphrase|passcode|pwd|"
    r"pass|secret|token|pin|api key|wi-?fi key|psk|kennwort)(?:\s*[(（【\[][^)）】\]]{0,20}[)）】\]])?\s*[:：]?",
    re.I,
)
_TABLE_RULE = re.compile(r"[\s|:+=-]*")


def _is_label_cell(cell: str) -> bool:
    return 0 < len(cell) <= 30 and bool(_LABEL_CELL.fullmatch(cell))


def _secret_cells(rows: list[list[str]]) -> list[tuple[int, int]]:
    """(row, column) of each cell that holds a password, for rows of one table (cell texts, stripped)."""
    found: list[tuple[int, int]] = []
    column, width = -1, 0
    for r, cells in enumerate(rows):
        if len(cells) < 2 or all(_TABLE_RULE.fullmatch(c) for c in cells):
            continue  # a rule line `|---|---|` keeps the header going
        labels = [c for c, cell in enumerate(cells) if _is_label_cell(cell)]
        wordish = all(not any(ch.isdigit() for ch in cell) and len(cell) <= 20 for cell in cells)
        known = any(cell.lower().rstrip(":：") in _COLUMN_WORDS for cell in cells)
        if labels and wordish and known:
            column, width = labels[0], len(cells)  # a header row
            continue
        if column >= 0 and len(cells) == width:
            if column < len(cells) and cells[column] and not _is_refusal(cells[column]):
                found.append((r, column))
            continue
        column = -1
        for c in labels:
            if c + 1 < len(cells) and cells[c + 1] and not _is_refusal(cells[c + 1]) \
                    and not _is_label_cell(cells[c + 1]):
                found.append((r, c + 1))
    return found


def _split_cells(line: str) -> tuple[str, list[tuple[int, int]]]:
    """A line's table separator and the spans of its cells' stripped text."""
    if "|" in line:
        sep = "|"
    elif "\t" in line:
        sep = "\t"
    elif "  " in line:
        sep = "  "
    else:
        return "", []
    spans: list[tuple[int, int]] = []
    if sep == "  ":
        for m in re.finditer(r"\S+(?: \S+)*", line):
            spans.append(m.span())
        return sep, spans
    pos = 0
    for part in line.split(sep):
        s, e = pos, pos + len(part)
        while s < e and line[s] in " \u3000":
            s += 1
        while e > s and line[e - 1] in " \u3000":
            e -= 1
        spans.append((s, e))
        pos += len(part) + 1
    if sep == "|" and line.strip().startswith("|"):
        spans = spans[1:]
    if sep == "|" and line.strip().endswith("|"):
        spans = spans[:-1]
    return sep, spans


def _tables(text: str) -> str:
    if "|" not in text and "\t" not in text and "  " not in text:
        return text
    lines = text.split("\n")
    groups: list[tuple[str, list[int]]] = []
    for i, line in enumerate(lines):
        sep, _ = _split_cells(line) if len(line) <= 2000 else ("", [])
        if groups and sep and groups[-1][0] == sep and groups[-1][1][-1] == i - 1:
            groups[-1][1].append(i)
        elif sep:
            groups.append((sep, [i]))
    changed = False
    for _sep, idx in groups:
        split = [_split_cells(lines[i])[1] for i in idx]
        rows = [[lines[i][s:e] for s, e in spans] for i, spans in zip(idx, split, strict=True)]
        for r, c in _secret_cells(rows):
            line = lines[idx[r]]
            s, e = split[r][c]
            if line[s:e] != MASK:
                lines[idx[r]] = line[:s] + MASK + line[e:]
                changed = True
                split[r] = _split_cells(lines[idx[r]])[1]
    return "\n".join(lines) if changed else text
