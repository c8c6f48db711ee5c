"""Credentials pasted into case mail never reach the bot's store, its JSON, its logs, its outbox or a
rendered template: a plain-text mail and an HTML-only mail with a table, through `mailbot run --once`."""

from __future__ import annotations

import email
import json
import subprocess
import sys
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path

from mailbot.mailbox.maildir import deliver
from tests.conftest import CONFIG

ROOT = Path(__file__).resolve().parents[1]
KEY = "CAS-04027-B7D2Z5"
SUBJECT = f"[案例号: {KEY} ] % 远程环境 % 初次响应 CMIT:0001247"

PLAIN_SECRETS = {
    "label with blanks and commas": "abc def,123",
    "mysql -p": "My$ql_2026",
    "sshpass": "S5h pass!",
    "Basic auth": "c3VwcG9ydDpTM2NyZXQtUGFzcw==",
    "PGP key": "lQOYBGXfakeBCAC7x9zzQ",
    "text table": "Zt7#mw2Q",
    "sftp URL": "Pa55w0rd-77",
    "reset to": "Mail@8812",
    "subject": "SubjPw#9931",
}
PLAIN_BODY = f"""杨先生，您好：

远程环境信息如下，请查收：
数据库密码：{PLAIN_SECRETS["label with blanks and commas"]}
测试连接：mysql -h 10.0.0.9 -uroot -p{PLAIN_SECRETS["mysql -p"]} -e 'show databases'
sshpass -p '{PLAIN_SECRETS["sshpass"]}' ssh deploy@10.0.0.8 uptime
Authorization: Basic {PLAIN_SECRETS["Basic auth"]}
日志上传：sftp://upload:{PLAIN_SECRETS["sftp URL"]}@upload.support.example:22222/in
您的邮箱密码已重置为 {PLAIN_SECRETS["reset to"]}，请登录后立即修改。

| 主机 | 用户名 | 密码 |
|---|---|---|
| 10.8.1.21 | root | {PLAIN_SECRETS["text table"]} |

-----BEGIN PGP PRIVATE KEY BLOCK-----

{PLAIN_SECRETS["PGP key"]}
=AbCd
-----END PGP PRIVATE KEY BLOCK-----

请您协助上传日志，谢谢！
Li Qi
"""

HTML_SECRETS = {"header table": "Oa#5521 x", "label cell": "Db@dm1n 2026", "cell text": "Vpn!9981"}
HTML_BODY = f"""<html><body><p>杨先生您好，补充账号信息见下表：</p>
<table border="1"><tr><th>系统</th><th>账号</th><th>密码</th></tr>
<tr><td>OA</td><td>yangw</td><td>{HTML_SECRETS["header table"]}</td></tr></table>
<table><tr><td>用户名</td><td>dbadmin</td></tr><tr><td>密码</td><td>{HTML_SECRETS["label cell"]}</td></tr></table>
<div>VPN 账号：li.qi<br>VPN 密码：{HTML_SECRETS["cell text"]}</div>
<p>请您协助确认能否登录，谢谢！</p><p>Li Qi</p></body></html>"""

SECRETS = {**PLAIN_SECRETS, **HTML_SECRETS}


def mail(subject: str, date: str, msgid: str, body: str, subtype: str, reply_to: str | None = None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Li Qi <liqi@support.example>"
    msg["To"] = "杨先生 <yang@customer.example>"
    msg["Cc"] = "casebot@support.example"
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = msgid
    if reply_to:
        msg["In-Reply-To"] = reply_to
        msg["References"] = reply_to
    msg.set_content(body, subtype=subtype, charset="utf-8", cte="base64")
    return msg.as_bytes()


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot.cli", *argv, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def decoded_eml(path: Path) -> str:
    """Every header and every part of a sent mail as a reader sees them: transfer encodings undone."""
    msg = email.message_from_bytes(path.read_bytes(), policy=default)
    texts = [f"{k}: {v}" for k, v in msg.items()]
    for part in msg.walk():
        if not part.is_multipart():
            texts.append(str(part.get_content()))
    return "\n".join(texts)


def forms(secret: str) -> list[str]:
    # as written, and as JSON writes it with ensure_ascii (`\u0026`-style escapes are ASCII anyway)
    return [secret, json.dumps(secret)[1:-1]]


def test_no_credential_reaches_the_store_json_logs_outbox_or_templates(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    maildir = tmp_path / "maildir"
    deliver(maildir, mail(f"{SUBJECT} 密码：{PLAIN_SECRETS['subject']}", "Mon, 12 Apr 2021 17:52:59 +0000",
                          "<e2e-plain@support.example>", PLAIN_BODY, "plain"))
    deliver(maildir, mail(f"RE: {SUBJECT}", "Tue, 13 Apr 2021 02:00:00 +0000", "<e2e-html@support.example>",
                          HTML_BODY, "html", reply_to="<e2e-plain@support.example>"))

    # the bot reads both, then the customer stays silent: the first reminder goes out, quoting the request
    run = cli(config, "run", "--once", "--now", "2021-04-19T10:00:00+08:00")
    assert run.returncode == 0, run.stderr
    outbox = sorted((tmp_path / "state" / "outbox").glob("*.eml"))
    assert outbox, "a reminder was sent"
    sent = "\n".join(decoded_eml(p) for p in outbox)
    assert "请您协助确认能否登录" in sent  # the reminder quotes the engineer's request: text did get through

    case = cli(config, "case", KEY, "--json")
    assert case.returncode == 0, case.stderr
    rendered = cli(config, "render", KEY, "reminder", "--html")
    assert rendered.returncode == 0, rendered.stderr

    store = {p: p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "state").rglob("*")
             if p.is_file() and p.suffix != ".eml"}
    places = {"run log": run.stderr + run.stdout, "case --json": case.stdout, "outbox": sent,
              "render --html": rendered.stdout, **{f"store {p.relative_to(tmp_path)}": t for p, t in store.items()}}
    leaks = [(kind, where) for kind, secret in SECRETS.items() for where, text in places.items()
             if any(f in text for f in forms(secret))]
    assert leaks == []
    texts = [m["text"] for m in json.loads(case.stdout)["messages"]]
    assert any("密码：******" in t for t in texts) and any("yangw" in t for t in texts)  # masked, not dropped

    # The mailbox itself still holds the mail as received: it is the customer's mail, not the bot's store.
    received = b"".join(p.read_bytes() for p in maildir.rglob("*") if p.is_file())
    assert b"From: Li Qi" in received
