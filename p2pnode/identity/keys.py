"""Key files and certificates: the node's identity key and the network key.

- A node's identity is an Ed25519 key pair kept in ``DATA_DIR/node_key`` (mode
  0600). Its node id is the first 16 bytes of SHA-256 of the raw public key, so no
  node can claim another's id without its private key.
- A network is an Ed25519 key too (``p2pnode keygen --network FILE``). Every
  member holds it and issues itself a TLS certificate signed by it at start; peers
  accept only certificates signed by their own network key. The open network
  (no key given) uses a key everybody knows, so its links are still encrypted and
  node ids still bound to keys, but anyone may join.
- The network tag (in handshakes and mDNS records) is a hash of the network's
  public key, never the key.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from ..errors import ConfigError
from .keypair import NodeIdentity, node_id_of, raw_public
from .owners import check_owned_file

NODE_KEY_FILE = "node_key"
OPEN_NETWORK_TAG = "open"
_OPEN_SEED = hashlib.sha256(b"p2pnode open network v1").digest()


def _private_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes, what: str, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (through a temporary file
    beside it, removed on any failure). Raises ``ConfigError`` naming the file and the
    step that failed (a full disk: ``No space left on device``)."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists already; not overwriting a key")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    step = f"create {tmp}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            step = f"write {tmp}"
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            step = f"sync {tmp}"
            os.fsync(fd)
        finally:
            os.close(fd)
        step = f"rename {tmp.name} to {path.name}"
        os.replace(tmp, path)
    except OSError as exc:
        if not step.startswith("create"):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror} (could not "
                          f"{step})") from None


def _read_private_key(path: Path, what: str) -> ed25519.Ed25519PrivateKey:
    """Load an Ed25519 private key PEM that only its owner, this user, may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"{what} {path} is {kind}; give the key file")
    with os.fdopen(fd, "rb") as file:
        check_owned_file(st, path, what)
        mode = st.st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{what} {path} is open to group or others "
                              f"(mode {stat.S_IMODE(mode):o}); "
                              f"run: chmod 600 {path}")
        try:
            data = file.read(64 * 1024)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        kind = ("a PEM file, but not an unencrypted private key" if b"-----BEGIN" in data
                else "not PEM")
        raise ConfigError(f"{what} {path} is not a p2pnode key ({kind}); "
                          f"{_KEY_FIX[what]}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{what} {path} is not a p2pnode key (not an Ed25519 key); "
                          f"{_KEY_FIX[what]}")
    return key


#: What to do about a key file that holds no p2pnode key.
_KEY_FIX = {
    "network key": "make a network key with: p2pnode keygen --network FILE",
    "node key": "it holds the node's identity: restore it, or move it away and the node "
                "makes a new identity",
}


def load_or_create_identity(data_dir: Path) -> NodeIdentity:
    """The identity kept in ``data_dir`` (created on first use, mode 0600).

    Raises ``ConfigError`` if the key file is unreadable, malformed, readable by
    others or owned by another user (``UnsafePath``); it is never silently replaced:
    that would change the node's identity. A key that cannot be written (a full disk)
    raises ``ConfigError`` naming the file, and leaves no temporary file behind.
    """
    path = data_dir / NODE_KEY_FILE
    if path.exists():
        return NodeIdentity.from_key(_read_private_key(path, "node key"))
    identity = NodeIdentity.generate()
    _write_secret(path, _private_pem(identity.key), "node key", overwrite=False)
    return identity


@dataclass(frozen=True)
class NetworkKey:
    """The key that makes a network: its holders are its members."""

    key: ed25519.Ed25519PrivateKey
    tag: str  # shown in handshakes and mDNS records; never the key

    @classmethod
    def open(cls) -> NetworkKey:
        """The open network: a key everybody knows."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(_OPEN_SEED), OPEN_NETWORK_TAG)

    @classmethod
    def load(cls, path: Path) -> NetworkKey:
        """Load a network key file. Raises ``ConfigError``."""
        key = _read_private_key(path, "network key")
        return cls(key, hashlib.sha256(raw_public(key)).hexdigest()[:16])

    @property
    def is_open(self) -> bool:
        return self.tag == OPEN_NETWORK_TAG


def generate_network_key(path: Path) -> NetworkKey:
    """Write a new network key to ``path`` (mode 0600). Refuses to overwrite a file."""
    key = ed25519.Ed25519PrivateKey.generate()
    _write_secret(path, _private_pem(key), "network key", overwrite=False)
    return NetworkKey.load(path)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def network_ca_pem(network: NetworkKey) -> bytes:
    """The network's CA certificate (self-signed by the network key), PEM."""
    now = datetime.datetime.now(datetime.UTC)
    public = network.key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"p2pnode network {network.tag}"))
        .issuer_name(_name(f"p2pnode network {network.tag}"))
        .public_key(public)
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(network.key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def node_cert_pem(identity: NodeIdentity, network: NetworkKey) -> bytes:
    """A certificate for ``identity`` issued by the network key, PEM (subject: node id)."""
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity.node_id.hex()))
        .issuer_name(_name(f"p2pnode network {network.tag}"))
        .public_key(identity.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            network.key.public_key()), critical=False)
        .sign(network.key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(identity: NodeIdentity) -> bytes:
    return _private_pem(identity.key)


def node_id_from_cert_der(der: bytes) -> bytes:
    """The node id of the Ed25519 key in a DER certificate. Raises ``ValueError``."""
    cert = x509.load_der_x509_certificate(der)
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the certificate's key is not Ed25519")
    return node_id_of(key.public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw))


_TAG_RE = re.compile(r"open|[0-9a-f]{16}")


def is_network_tag(text: str) -> bool:
    """True if ``text`` has the form of a network tag (``open`` or 16 hex digits)."""
    return _TAG_RE.fullmatch(text) is not None


def network_tag_from_cert_der(der: bytes) -> str | None:
    """The network tag a DER certificate names as its issuer (``CN=p2pnode network
    TAG``), unverified; None if it names none. For messages only: it proves nothing."""
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    for attr in names:
        value = attr.value if isinstance(attr.value, str) else ""
        tag = value.removeprefix("p2pnode network ")
        if tag != value and is_network_tag(tag):
            return tag
    return None
