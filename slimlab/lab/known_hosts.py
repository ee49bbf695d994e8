"""OpenSSH ``known_hosts`` files, read line by line and never rewritten.

paramiko's own loader raises on lines it does not understand (``@cert-authority``,
``@revoked``) and its ``save_host_keys`` rewrites the whole file, dropping comments,
key types it does not know and ``host,ip`` grouping. Here:

- every line paramiko can read is a known key; ``@revoked`` keys are refused even
  if listed elsewhere; ``@cert-authority`` lines are skipped with a warning
  (paramiko does not check host certificates); unknown key types are skipped, and
  damaged lines with a warning;
- a key accepted on first use is *appended*, as one OpenSSH line, under an
  ``flock``, after checking that no parallel job appended it first (a ``@revoked``
  key never is).
"""

import fcntl
import logging
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)


@dataclass
class KnownHosts:
    path: Path
    entries: list[paramiko.hostkeys.HostKeyEntry] = field(default_factory=list)
    revoked: set[tuple[str, str]] = field(default_factory=set)  # (key type, base64)

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked

    def keys(self, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
        """The known keys, added to ``into`` (e.g. an SSHClient's host keys) or to a new HostKeys."""
        keys = paramiko.HostKeys() if into is None else into
        for entry in self.entries:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        return keys


def parse(text: str, path: Path) -> KnownHosts:
    known = KnownHosts(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0] == "@revoked" and len(fields) >= 4:
            known.revoked.add((fields[2], fields[3]))
            continue
        if fields[0].startswith("@"):
            log.warning("%s line %d: %s entries are not supported by slimlab's SSH client; skipped",
                        path, lineno, fields[0])
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError) as exc:
            # e.g. a line cut off inside its base64 key (paramiko's InvalidHostKey is no SSHException)
            log.warning("%s line %d: not a valid host key line; skipped (%s)", path, lineno, exc)
            continue
        if entry is not None:  # None: a key type paramiko does not know, e.g. sk-ssh-ed25519
            known.entries.append(entry)
    return known


def read(path: Path) -> KnownHosts:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    return parse(text, path)


def append(path: Path, hostname: str, key: paramiko.PKey) -> bool:
    """Add ``hostname``'s key as one line at the end of ``path`` unless it is there; True if appended."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as ssh(1) makes ~/.ssh
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            current = parse(f.read(), path)
            # A revoked key is never written down as known, even on first use: the caller refuses it.
            if current.is_revoked(key) or key.get_name() in (current.keys().lookup(hostname) or {}):
                return False
            f.seek(0, 2)
            if f.tell() and not _ends_with_newline(path):
                f.write("\n")
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            f.flush()
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


class AppendOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host key, append it to ``path`` (only that line) and log that it did."""

    def __init__(self, path: Path, device: str):
        self.path, self.device = path, device

    def missing_host_key(self, client, hostname, key):
        if append(self.path, hostname, key):
            log.warning("device %r: trust_on_first_use: accepted the unknown %s key of %s and appended it to %s",
                        self.device, key.get_name(), hostname, self.path)
