"""redact(): credentials people paste into mail are masked before anything stores, logs or sends them —
and ordinary text that merely looks a little like one is left alone."""

from __future__ import annotations

import pytest

from mailbot.redact import MASK, contains_secret, redact

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
