"""A real Dovecot 2.3 on 127.0.0.1 for IMAP tests: its own config, mail and state in a temp dir.

Use it with `pytest_plugins = ["tests.imap_server"]` and a `dovecot` argument. Each test gets a fresh
server and an empty mail store. Without Dovecot the tests are skipped, unless MAILBOT_REQUIRE_DOVECOT=1
(as in `make test` and CI), where a missing or unsupported Dovecot fails them instead.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

USER = "casebot@support.example"
OTHER_USER = "other@support.example"  # a colleague logging in to the same shared mailbox
PASSWORD = "secret"
OTHER_PASSWORD = "other-secret"
DESK_USER = "support-en@support.example"  # a second support mailbox of its own (several mailboxes, issue 16)
DESK_PASSWORD = "desk-secret"

_START_TIMEOUT = 15.0


def _dovecot_binary() -> str | None:
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


def _unavailable(reason: str) -> None:
    if os.environ.get("MAILBOT_REQUIRE_DOVECOT") == "1":
        pytest.fail(f"MAILBOT_REQUIRE_DOVECOT=1 but {reason} (run scripts/ensure-dovecot.sh)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mail_account() -> tuple[str, int, int]:
    """The system user Dovecot runs mail processes as: never root (Dovecot refuses uid 0)."""
    if os.geteuid() != 0:
        # Unprivileged Dovecot cannot switch users: everything runs as ourselves.
        me = pwd.getpwuid(os.geteuid())
        return me.pw_name, me.pw_uid, me.pw_gid
    for name in ("dovecot", "mail"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    _unavailable("neither a 'dovecot' nor a 'mail' system user exists for Dovecot's mail processes")
    raise AssertionError("unreachable")


class DovecotServer:
    """One Dovecot instance. Its port and mail directory survive stop()/start()/restart()."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.user = USER
        self.password = PASSWORD
        self.other_user = OTHER_USER
        self.other_password = OTHER_PASSWORD
        self.mail_dir = root / "mail"
        self.log_path = root / "dovecot.log"
        self.conf_path = root / "dovecot.conf"
        self.extra_config = ""  # appended to the config on the next start(), e.g. imap_capability
        self.tls_port: int | None = None  # set by enable_tls()
        self.ca_file: Path | None = None  # the self-signed certificate to trust, after enable_tls()
        self._proc: subprocess.Popen[bytes] | None = None
        self._account, self.mail_uid, self.mail_gid = _mail_account()
        self._prepare()

    # --- lifecycle

    def _prepare(self) -> None:
        # The temp dir must be traversable by the mail uid; the mail store must be owned by it.
        self.root.chmod(0o755)
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        self.mail_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_dir, self.mail_uid, self.mail_gid)
        passwd = self.root / "users"
        # Fields: user:password:uid:gid:gecos:home:shell:extra. `user=` renames the login, so
        # the second account opens the very same mailbox (another client of a shared mailbox).
        passwd.write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}::::::\n{OTHER_USER}:{{PLAIN}}{OTHER_PASSWORD}::::::user={USER}\n"
            f"{DESK_USER}:{{PLAIN}}{DESK_PASSWORD}::::::\n",
            encoding="utf-8",
        )
        passwd.chmod(0o644)

    def _write_config(self) -> None:
        r = self.root
        unprivileged = os.geteuid() != 0
        login_users = ""
        if unprivileged:  # Dovecot cannot switch users or chown sockets: everything is ourselves
            group = grp.getgrgid(self.mail_gid).gr_name
            login_users = (
                f"default_login_user = {self._account}\ndefault_internal_user = {self._account}\n"
                f"default_internal_group = {group}\n"
                "service anvil {\n  chroot =\n}\n"
            )
        tls = "ssl = no"
        if self.tls_port is not None:
            tls = f"ssl = yes\nssl_cert = <{r}/tls.crt\nssl_key = <{r}/tls.key"
        self.conf_path.write_text(
            f"""# written by tests/imap_server.py (Dovecot 2.3 syntax)
base_dir = {r}/run
state_dir = {r}/state
instance_name = mailbot-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = 127.0.0.1
{tls}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:{self.mail_dir}/%u
mail_fsync = never
mail_max_userip_connections = 100
shutdown_clients = yes
{login_users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/users
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.mail_dir}/%u
}}
service imap-login {{
  {"chroot =" if unprivileged else ""}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port or 0}
  }}
}}
{self.extra_config}
""",
            encoding="utf-8",
        )

    def start(self) -> None:
        if self._proc is not None:
            return
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.conf_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() reaches every child
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"dovecot exited with {code} at start-up:\n{self.log_tail()}")
            if self._greets():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not listen on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.02)

    def _greets(self) -> bool:
        # The port accepting is not enough: wait for the IMAP greeting so login works right away.
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.settimeout(2)
                return s.recv(4).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Signal the whole group: Dovecot 2.3's master leaves logged-in imap processes (and its log
        # process) running when only it gets SIGTERM, so clients would not notice the "restart".
        self._signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        self._signal_group(proc.pid, signal.SIGKILL)  # stragglers: nothing may outlive the test
        # The master is gone; wait until the listener is really closed so start() binds again.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.02)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- helpers for tests

    def enable_tls(self) -> None:
        """Restart with TLS: STARTTLS on `port`, implicit TLS on `tls_port`, trusting `ca_file`."""
        openssl = shutil.which("openssl")
        if openssl is None:
            _unavailable("openssl not installed (needed for a test certificate)")
            raise AssertionError("unreachable")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(self.root / "tls.key"),
                "-out",
                str(self.root / "tls.crt"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.ca_file = self.root / "tls.crt"
        self.tls_port = _free_port()
        self.restart()

    def fix_ownership(self) -> None:
        """After a test edits the mail store by hand: give it back to the mail uid."""
        if os.geteuid() != 0:
            return
        for path in [self.mail_dir, *self.mail_dir.rglob("*")]:
            os.chown(path, self.mail_uid, self.mail_gid, follow_symlinks=False)

    def client(self, user: str | None = None, password: str | None = None) -> IMAPClient:
        """A separate, logged-in connection (another client). The caller logs out."""
        c = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        c.login(user or self.user, password or self.password)
        return c

    def deliver(self, raw: bytes, folder: str = "INBOX") -> int | None:
        """Append one message as new mail; returns its UID (from APPENDUID) when the server says."""
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            answer = c.append(folder, raw)
        m = re.search(rb"APPENDUID \d+ (\d+)", answer if isinstance(answer, bytes) else b"")
        return int(m.group(1)) if m else None

    def deliver_many(self, raws: Iterable[bytes], folder: str = "INBOX") -> None:
        """Append many messages quickly (MULTIAPPEND, 200 per command)."""
        batch: list[bytes] = []
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for raw in raws:
                batch.append(raw)
                if len(batch) == 200:
                    c.multiappend(folder, batch)
                    batch = []
            if batch:
                c.multiappend(folder, batch)

    def counts(self) -> dict[str, int]:
        """Messages per folder (all folders), for "nothing was lost or deleted" checks."""
        out: dict[str, int] = {}
        with self.client() as c:
            for _flags, _sep, name in c.list_folders():
                out[str(name)] = int(c.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])
        return out

    def message_ids(self, folder: str) -> list[str]:
        """The Message-ID headers of every message in a folder, in UID order."""
        with self.client() as c:
            if not c.folder_exists(folder):
                return []
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            out: list[str] = []
            for i in range(0, len(uids), 100):
                data = c.fetch(uids[i : i + 100], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                for uid in sorted(data):
                    header = next(v for k, v in data[uid].items() if k.startswith(b"BODY[HEADER"))
                    out.append(header.decode().partition(":")[2].strip())
            return out


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    binary = _dovecot_binary()
    if binary is None:
        _unavailable("dovecot not installed")
        raise AssertionError("unreachable")
    try:
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        _unavailable(f"cannot run {binary} --version: {e}")
        raise AssertionError("unreachable") from e
    if not version.startswith("2.3"):
        # 2.4 renamed most settings (mail_location, passdb args, …): this config would not load.
        _unavailable(f"dovecot {version or '(unknown version)'} found; the test config is for 2.3 only")
    root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))  # short: unix socket paths are limited
    server = DovecotServer(binary, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
