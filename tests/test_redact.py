"""redact(): credentials people paste into mail are masked before anything stores, logs or sends them —
and ordinary text that merely looks a little like one is left alone."""

from __future__ import annotations

import pytest

from mailbot.parse.redact import MASK, contains_secret, redact, redact_html

MASKED = [
    # labelled values, Chinese and English, full- and half-width colons
    ("密码：Xk93-fake-Pw77", "密码：******"),
    ("密码: Xk93-fake-Pw77", "密码: ******"),
    ("登录密码：abc", "登录密码：******"),
    ("新密码：abc，请尽快修改", "新密码：******，请尽快修改"),
    ("初始密码为：abc", "初始密码为：******"),
    ("口令：Secr3t!", "口令：******"),
    ("口令为：Secr3t", "口令为：******"),
    ("密码是：abc", "密码是：******"),
    ("密码(临时)：abc", "密码(临时)：******"),
    ("密钥：0123abcd", "密钥：******"),
    ("验证码：123456", "验证码：******"),
    ("授权码：abcd1234", "授权码：******"),
    ("password: x", "password: ******"),
    ("Password=hunter2", "Password=******"),
    ("PASSWORD : hunter2", "PASSWORD : ******"),
    ("passwd: hunter2", "passwd: ******"),
    ("passphrase = correct-horse", "passphrase = ******"),
    ("Kennwort: geheim", "Kennwort: ******"),
    ("pwd=x", "pwd=******"),
    ("pwd=x&user=admin", "pwd=******&user=admin"),
    ("pass: x", "pass: ******"),
    ("secret: x", "secret: ******"),
    ("api_key=abc123", "api_key=******"),
    ("API-Key: abc123", "API-Key: ******"),
    ("access key: AKxyz", "access key: ******"),
    ("token: abc", "token: ******"),
    ("AccessToken: abc", "AccessToken: ******"),  # camelCase part
    ("dbPassword=abc", "dbPassword=******"),
    ("DBPassword=abc", "DBPassword=******"),
    ("db_password=abc", "db_password=******"),
    ("rootpassword: abc", "rootpassword: ******"),
    ('password = "two words"', "password = ******"),  # a quoted value is masked whole
    ("password: 'two words' ok", "password: ****** ok"),
    ("密码：“两个 词”", "密码：******"),
    ("用户名：admin 密码：abc 端口：22", "用户名：admin 密码：****** 端口：22"),
    # URL userinfo
    ("sftp://upload:Pa55w0rd@upload.support.example:22222/in", "sftp://upload:******@upload.support.example:22222/in"),
    ("ftp://user:p@ss@host/x", "ftp://user:******@host/x"),  # an `@` inside the password
    ("https://a:b@h", "https://a:******@h"),
    # keys and tokens
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "[rsa private key removed]"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\nbye",
     "[openssh private key removed]\nbye"),
    ("-----BEGIN PRIVATE KEY-----\ntruncated, never ended", "[private key removed]"),
    ("Authorization: Bearer abcdefghijklmnop", "Authorization: Bearer ******"),
    ("key AKIAABCDEFGHIJKLMNOP here", "key ****** here"),
    ("ghp_" + "a" * 36, MASK),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVl", MASK),
    ("sk-proj-" + "Ab1_" * 8, MASK),
    # without a colon: only a value that looks like a secret
    ("账号 case04027，密码是 Shi-Leak-42", "账号 case04027，密码是 ******"),
    ("密码为 Shi-Leak-42。", "密码为 ******。"),
    ("密码 Abc12345", "密码 ******"),
    ("口令 s3cr3t!", "口令 ******"),
    ("the password is hunter2.", "the password is ******."),
    ("Passcode is 0x41!z", "Passcode is ******"),
    ('{"password": "two words"}', '{"password": ******}'),
    ("passcode: 7788", "passcode: ******"),
    ("mysql -uroot -pS3cret-x db", "mysql -uroot -p****** db"),
    ("mysqldump -h db -p'two words' x", "mysqldump -h db -p****** x"),
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert contains_secret(text)


LEFT_ALONE = [
    "请修改密码",  # a label without a value
    "密码是必须的",  # `是` without a colon: prose
    "Password reset link sent",
    "passwords: are fine",
    "请修改密码 后重启",
    "密码长度为 8 位以上",
    "密码为 8 位",
    "密码 reset 之后再试",
    "The password is required.",
    "the password is in the vault",
    "mysql -h db -p",  # -p alone: mysql asks for it
    "pip install -pre",
    "Passport: E1234567",
    "Compass: north",
    "Bypass: yes",
    "COMPASS: x",
    "mytoken: x",  # `token` glued to a lowercase word
    "The secret is to wait",
    "tokens are fine",
    "账户名：case04027",
    "sftp://upload.support.example:22222，目录 upload",  # a port is not a password
    "https://support.example/path?a=b&c=d",
    "mailto:liqi@support.example",
    "ssh root@10.0.0.1",
    "see http://host/a@b",
    "Li Qi <liqi@support.example>",
    "[案例号: CAS-04027-B7D2Z5 ] 初次响应 CMIT:0001247",
    "bugcheck 0x13A (内核模式堆损坏)",
    "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "",
]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_left_alone(text: str) -> None:
    assert redact(text) == text
    assert not contains_secret(text)


@pytest.mark.parametrize("text", [t for t, _ in MASKED])
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


# --- issue 13: the phrasings that got through, and the look-alikes that were masked -----------------------

FOUND_NOW = [
    ("您的密码已重置为 Mail@8812，请尽快修改。", "您的密码已重置为 ******，请尽快修改。"),
    ("已重置为：Xy!83kq0", "已重置为：******"),
    ("密码（区分大小写）：Tr0ub4dor&3", "密码（区分大小写）：******"),
    ("密 码：Kx82_mq!z", "密 码：******"),
    ("用户名/密码：administrator / Hx!29fk3Lq", "用户名/密码：administrator / ******"),
    ("请用 administrator / Qwe!2345 登录", "请用 administrator / ****** 登录"),
    ("动态口令：739204", "动态口令：******"),
    ("Password for the portal: Wint3r!sComing", "Password for the portal: ******"),
    ("pw: hunter2go", "pw: ******"),
    ("ssh to 10.0.0.5 as root, password Qwe!2345.", "ssh to 10.0.0.5 as root, password ******."),
    ("Your PIN is 4417.", "Your PIN is ******."),
    ("Wi-Fi key: Guest Lounge 2026", "Wi-Fi key: ******"),
    ("SECRET_KEY = 'django-insecure-9x$k2!mq'", "SECRET_KEY = ******"),
    ("sqlplus appuser/Ora#2026@PRODDB", "sqlplus appuser/******@PRODDB"),
    ("redis-cli -h cache01 -a Rds_Pass_88 ping", "redis-cli -h cache01 -a ****** ping"),
    ("sshpass -p 'S5h pass!' ssh deploy@h", "sshpass -p ****** ssh deploy@h"),
    ("curl -u admin:Curl#2026 https://api.example", "curl -u admin:****** https://api.example"),
    ("net use \\\\fs\\ipc$ /user:ACME\\svc Bkp!2026x", "net use \\\\fs\\ipc$ /user:ACME\\svc ******"),
    ("Authorization: Basic c3VwcG9ydDpTM2NyZXQ=", "Authorization: Basic ******"),
    ("<password>Xml$ecret42</password>", "<password>******</password>"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGX\n-----END PGP PRIVATE KEY BLOCK-----",
     "[pgp private key block removed]"),
    ("密码：abc def,123\n下一行", "密码：******\n下一行"),  # to the end of the line, not in part
    ("| 主机 | 用户名 | 密码 |\n|---|---|---|\n| 10.8.1.21 | root | Zt7 mw2Q |",
     "| 主机 | 用户名 | 密码 |\n|---|---|---|\n| 10.8.1.21 | root | ****** |"),
    ("新密码：\n  Zs#880214", "新密码：\n  ******"),  # the password alone on the next line
    # found by the trust audit of 2026-12-03: an arrow as the separator
    ("password -> Arr0w!pass", "password -> ******"),
    ("新密码 → Kx82_mq!z", "新密码 → ******"),
]


@pytest.mark.parametrize(("text", "expected"), FOUND_NOW)
def test_issue_13_phrasings_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


LOOK_ALIKES = ["密码：见短信", "Secret: N/A", "token: expired", "We use Bearer authentication", "PWD=/opt/app",
               "the password is required", "请重置密码", "password policy: 8 characters", "验证码：已发送", "密码：无",
               "api_key: none", "password: ${DB_PASSWORD}", "Basic authentication is off", "OLDPWD=/tmp"]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_refusals_and_look_alikes_are_not_secrets(text: str) -> None:
    assert redact(text) == text


def test_html_tables_are_masked_by_cell() -> None:
    html = ("<table><tr><th>系统</th><th>账号</th><th>密码</th></tr><tr><td>OA</td><td>yangw</td><td>Oa 55, x</td></tr>"
            "</table><table><tr><td>密码</td><td><b>Db@dm1n 2026</b></td><td>备注</td></tr></table>")
    out = redact_html(html)
    assert "Oa 55, x" not in out and "Db@dm1n" not in out
    assert "<td>yangw</td>" in out and "<td>备注</td>" in out and out.count(MASK) == 2
    assert redact_html("<p>no table, no label</p>") == "<p>no table, no label</p>"


def test_a_case_key_after_a_password_in_a_subject_survives() -> None:
    assert redact("RE: 密码：abc def CAS-04027-B7D2Z5") == "RE: 密码：****** CAS-04027-B7D2Z5"
    assert redact("密码：abc [案例号: CAS-04027-B7D2Z5 ]") == "密码：****** [案例号: CAS-04027-B7D2Z5 ]"


def test_past_the_label_budget_lines_are_masked_not_skipped() -> None:
    text = "".join(f"password: hunter{i} x\n" for i in range(6_000))  # more labels than one mail ever holds
    out = redact(text)
    assert "hunter" not in out and out.count("\n") == 6_000
