"""Mail to a real SMTP server, with an accepted log that tells what a crash after the server's 250 left."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from pathlib import Path

from mailbot.config import SmtpSettings
from mailbot.storage import atomic_write_bytes
from mailbot.text import one_line
from mailbot.transport.base import (
    PermanentFailure,
    Refused,
    TemporaryFailure,
    TransportError,
    all_refused,
    reply_text,
)

log = logging.getLogger("mailbot")


_AUTH_CODES = frozenset({530, 534, 535, 538})

class SmtpTransport:
    def __init__(
        self,
        settings: SmtpSettings,
        password: str | None,
        *,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        accepted_log: Path | None = None,
    ) -> None:
        self.settings = settings
        self.password = password
        # Where the Message-ID of every accepted mail is written the moment the server's final 250 is read.
        self.accepted = AcceptedLog(accepted_log) if accepted_log is not None else None
        # The EHLO name; smtplib's default is getfqdn(), which can stall on DNS. Pass the bot's domain.
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context or ssl.create_default_context()

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and log in a session; raises TemporaryFailure with the reason."""
        s = self.settings
        try:
            if s.security == "ssl":  # implicit TLS, RFC 8314 §3.3 (usually port 465)
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=s.timeout_seconds,
                    context=self.ssl_context,
                )
            else:
                smtp = smtplib.SMTP(
                    s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout_seconds
                )
        except (smtplib.SMTPException, OSError) as e:
            raise self._session_error(e) from e
        try:
            smtp.ehlo()
            if s.security == "starttls":  # RFC 3207
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()  # RFC 3207 §4.2: forget what the server said before TLS
            if s.username and self.password:
                smtp.login(s.username, self.password)  # RFC 4954
        except (smtplib.SMTPException, OSError) as e:
            _close(smtp)
            raise self._session_error(e) from e
        return smtp

    def _session_error(self, e: BaseException) -> TemporaryFailure:
        """Connection, TLS and login problems: never the mail's fault, so always temporary."""
        where = self._where
        security = self.settings.security
        if isinstance(e, smtplib.SMTPAuthenticationError):
            return TemporaryFailure(
                f"SMTP login as {self.settings.username!r} refused by {where} "
                f"({reply_text(e.smtp_code, e.smtp_error)}): wrong username or password?"
            )
        if isinstance(e, smtplib.SMTPNotSupportedError):
            text = str(e)
            if "STARTTLS" in text.upper():
                return TemporaryFailure(
                    f"{where} does not offer STARTTLS: set [smtp] security to 'ssl' or 'none' to match the server"
                )
            return TemporaryFailure(f"{where}: {text} (no SMTP AUTH: leave [smtp] username empty?)")
        if isinstance(e, ssl.SSLCertVerificationError):
            return TemporaryFailure(f"TLS certificate of {where} not trusted: {e.verify_message}")
        if isinstance(e, ssl.SSLError):
            hint = (
                "the port speaks plain SMTP: use security 'starttls' or 'none'"
                if security == "ssl"
                else "TLS mismatch between [smtp] security and the server"
            )
            return TemporaryFailure(f"TLS handshake with {where} failed ({e.reason or e}): {hint}")
        if isinstance(e, smtplib.SMTPServerDisconnected) and isinstance(e.__context__, TimeoutError):
            e = e.__context__  # smtplib reports a read timeout as "Connection unexpectedly closed"
        if isinstance(e, smtplib.SMTPServerDisconnected):
            return TemporaryFailure(f"{where} closed the connection ({e or 'no reason given'})")
        if isinstance(e, smtplib.SMTPResponseException):  # greeting or EHLO refused (SMTPConnectError…)
            return TemporaryFailure(f"{where} refused the session: {reply_text(e.smtp_code, e.smtp_error)}")
        if isinstance(e, ConnectionRefusedError):
            return TemporaryFailure(
                f"connection to {where} refused: is the SMTP server running on that port?"
            )
        if isinstance(e, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
            return TemporaryFailure(f"{where} did not answer within {self.settings.timeout_seconds} s")
        if isinstance(e, OSError):
            return TemporaryFailure(f"cannot reach {where}: {e.strerror or e}")
        return TemporaryFailure(f"SMTP session with {where} failed: {e}")

    def send(self, raw: bytes, sender: str, recipients: list[str], message_id: str) -> Refused:
        if not recipients:
            raise PermanentFailure("no recipients")
        # RFC 6531: a non-ASCII address needs SMTPUTF8, which we do not negotiate (smtplib would raise
        # UnicodeEncodeError mid-session): refused here, as a server would at RCPT.
        unsendable: Refused = {r: (553, "5.6.7 non-ASCII address needs SMTPUTF8 (RFC 6531)")
                               for r in recipients if not r.isascii()}
        if unsendable:
            recipients = [r for r in recipients if r not in unsendable]
            if not recipients:
                raise all_refused(unsendable, list(unsendable))
        smtp = self._connect()
        accepted = False
        try:
            refused: Refused = smtp.sendmail(sender, recipients, raw)
            accepted = True
        except smtplib.SMTPRecipientsRefused as e:  # 5xx to RCPT TO: the recipients' failure
            raise all_refused({**unsendable, **e.recipients}, recipients) from e
        # The rest is about the message (RFC 5321 §3.3: MAIL FROM, DATA and the reply after the data).
        except smtplib.SMTPSenderRefused as e:
            raise self._mail_refused("sender " + sender, e.smtp_code, e.smtp_error) from e
        except smtplib.SMTPDataError as e:
            raise self._mail_refused("message", e.smtp_code, e.smtp_error) from e
        except smtplib.SMTPResponseException as e:
            raise self._mail_refused("mail", e.smtp_code, e.smtp_error) from e
        except (smtplib.SMTPException, OSError) as e:
            # Disconnected or timed out mid-transaction: the server did not take responsibility (RFC 5321
            # §6.1 starts at the final 250), so sending again is right.
            raise self._session_error(e) from e
        finally:
            if accepted:  # before QUIT and before the caller marks it: the crash window is this one write
                self._note_accepted(message_id)
            _close(smtp)
        # Partial refusal: the others have it; reporting the refused ones is the caller's business.
        return {addr: (code, one_line(text)) for addr, (code, text) in {**unsendable, **refused}.items()}

    def _mail_refused(self, what: str, code: int, text: str | bytes) -> TransportError:
        reply = reply_text(code, text)
        if code in _AUTH_CODES:
            return TemporaryFailure(
                f"{self._where} wants a login before sending ({reply}): check [smtp] username"
            )
        if 400 <= code < 500:
            return TemporaryFailure(f"{what} deferred by {self._where}: {reply}")
        return PermanentFailure(f"{what} refused by {self._where}: {reply}", about_message=True)

    def check(self) -> str:
        s = self.settings
        if s.username and not self.password:
            raise TemporaryFailure(f"[smtp] username is {s.username!r} but ${s.password_env} is empty")
        smtp = self._connect()
        try:
            code, text = smtp.noop()
        except (smtplib.SMTPException, OSError) as e:
            raise self._session_error(e) from e
        finally:
            _close(smtp)
        if code != 250:
            raise TemporaryFailure(f"{self._where} answered NOOP with {reply_text(code, text)}")
        login = f", logged in as {s.username}" if s.username else ", no login"
        return f"SMTP {self._where} reachable ({s.security}{login})"

    def _note_accepted(self, message_id: str) -> None:
        if self.accepted is None:
            return
        try:
            self.accepted.add(message_id)
        except OSError as e:  # the mail is out; only a crash in the next moment could now repeat it
            log.warning("- cannot note that %s was accepted in %s: %s", message_id, self.accepted.path,
                        e.strerror or e)

    def settle(self) -> None:
        """Nothing to do: the server took responsibility with its 250, and the accepted log is synced."""

    def already_sent(self, message_id: str) -> bool | None:
        """True when the accepted log has it; otherwise SMTP cannot tell (the IMAP Sent folder may)."""
        if self.accepted is not None and message_id in self.accepted:
            return True
        return None


class AcceptedLog:
    """The Message-IDs of the last mails an SMTP server accepted, one per line, appended (and fsynced) as
    soon as the final 250 is read — before QUIT, before the Sent copy, before the outbox ledger is marked.

    SMTP has no way to ask "did you get this one?": without this file, a crash between the server's 250 and
    the ledger mark sends the mail again on restart. With it, only a crash between the server writing its
    250 and this append (a few microseconds) can. Only the newest ids matter (the mail in hand at a crash),
    so the file keeps the last KEEP of them.
    """

    KEEP = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: list[str] | None = None

    def _load(self) -> list[str]:
        if self._ids is None:
            try:
                text = self.path.read_bytes().decode("ascii", "replace")
            except FileNotFoundError:
                text = ""
            self._ids = [line.strip() for line in text.split("\n") if line.strip()]
        return self._ids

    def add(self, message_id: str) -> None:
        ids = self._load()
        mid = " ".join(message_id.split())  # one line whatever it holds
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.write(fd, (mid + "\n").encode("ascii", "replace"))
            os.fsync(fd)
        finally:
            os.close(fd)
        ids.append(mid)
        if len(ids) > 2 * self.KEEP:
            del ids[: -self.KEEP]
            atomic_write_bytes(self.path, "".join(i + "\n" for i in ids).encode("ascii", "replace"))

    def __contains__(self, message_id: str) -> bool:
        return " ".join(message_id.split()) in self._load()


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT politely; the mail is already accepted (or not), so a failing QUIT must not change that."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
