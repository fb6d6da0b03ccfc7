"""TLS for a cluster (`raylite start --head --tls`): its CA, each member's key and
certificate, the enrolment that hands certificates out, and the SSL contexts.

Owns the files of a member's `tls/` directory (in its session dir, every file 0600),
the cluster CA (the head's), the enrolment exchange and which TCP sockets are wrapped
(transport.TLS, set by `activate`). Not the token handshake, which still runs inside
every TLS connection (transport.py), nor the sockets themselves.

Who holds what:

    head (head-only process)  tls/ca.key, ca.crt: the cluster CA, made at its start;
                              node.key, node.crt: its own, issued by itself (a head
                              with --storage keeps them in <tmp>/raylite/tls-ca/<key of
                              the storage>, 0700, and reuses them when it restarts)
    every other member        node.key: made by the member itself, never sent anywhere;
      (node, remote driver)   node.crt: the head's signature on its public key; ca.crt
    workers and local drivers read their node's tls/ (the same user's session dir)

Enrolment, on the head's TCP port: TLS without a client certificate (the member has
none yet, and cannot check the head's either: it has no CA), then the token
handshake with the member's certificate request bound into both proofs:

    member --TLS (server unchecked, no client certificate)--------------> head
    head   --MAGIC + server nonce---------------------------------------> member
    member --MAGIC + cn + HMAC(token, client | sn | cn | H(csr)), csr---> head
    head   --HMAC(token, server | sn | cn | H(csr)),
             ca, cert, HMAC(token, enrolled | sn | cn | ca | cert)------> member

The private key never leaves the member: only a certificate signing request travels,
and a CSR holds the public key alone. The member trusts the CA it receives only
because the head's MAC over it proves the token, bound to this exchange's nonces:
someone in the path (the TLS here is unchecked) can neither swap in a CA of its own
nor the CSR (both proofs cover its hash), nor replay an old answer. A connection
without a client certificate can do nothing but enrol; a plain (non-TLS) client is
refused by the TLS layer before a byte of raylite is read.

After enrolment, every TCP connection is TLS 1.3 with a certificate required and
checked against the CA both ways, and the token handshake runs inside it. Host names
are not checked: a certificate says "a member of this cluster", not which machine
(addresses change, nodes come and go); the token proof inside pins the cluster.
Unix sockets (a node with its own workers and drivers, one machine, one user) stay
plain, as without --tls. The dashboard serves HTTPS with the head's certificate; a
browser has no cluster certificate, so there a client certificate is optional and
the login (the token's HMAC, dashboard/) authenticates the user.

A blocking connection is read by its reader thread while user threads write to it
(transport.Connection); an ssl.SSLSocket used so corrupts its TLS state (OpenSSL's
SSL objects are not safe across threads). So those sockets are TLSStreams: the TLS
state machine on memory buffers (ssl.SSLObject), touched only under one lock that is
never held across a blocking socket call; encrypted bytes go out under a second lock,
in the order the state machine made them. Session tickets are off (num_tickets = 0):
no message after the handshake that a reader would have to answer.

    writer:  send lock { tls lock { encrypt } ; raw sendall }
    reader:  raw recv ; tls lock { decrypt } ; (anything to answer: as a writer)

Without --tls nothing here is imported (transport.TLS stays None; the only check is
`TLS is not None` where a TCP socket is made, never per message). `cryptography` is a
dependency (pyproject.toml) but imported only here, only with --tls.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import socket
import ssl
import struct
import tempfile
import threading
from typing import Any

from . import transport
from .config import CONFIG
from .exceptions import AuthenticationError, ConnectionLost

DIR = "tls"  # under a session dir
CA_KEY, CA_CERT, KEY, CERT = "ca.key", "ca.crt", "node.key", "node.crt"
_MAX_BLOB = 64 << 10  # a CSR or a certificate: a few hundred bytes
_ENROLLED = b"raylite enrolment: head's answer"
_CSR = b"raylite enrolment: csr "
_BLOB = struct.Struct("<I")
CERT_DAYS = 3650  # a cluster lives as long as its head; rotate by restarting with --tls


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError as exc:  # pragma: no cover - a dependency; a broken install
        raise RuntimeError(
            "--tls needs the 'cryptography' package: pip install cryptography"
        ) from exc
    return x509


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# --- keys and certificates (cryptography) --------------------------------------------
def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    return bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))


def _name(common: str) -> Any:
    x509 = _crypto()
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _sign(ca_key: Any, ca_cert: Any, public_key: Any, common: str, *, is_ca: bool) -> Any:
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    subject = _name(common)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if ca_cert is None else ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little apart
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        issuer_key = ca_cert.public_key()
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def make_cluster_ca(tls_dir: str) -> None:
    """The head's start: a new cluster CA and the head's own key and certificate."""
    from cryptography.hazmat.primitives import serialization as ser

    _private_dir(tls_dir)
    ca_key = _new_key()
    ca_cert = _sign(ca_key, None, ca_key.public_key(), "raylite cluster CA", is_ca=True)
    key = _new_key()
    cert = _sign(ca_key, ca_cert, key.public_key(), "raylite head", is_ca=False)
    _write_private(os.path.join(tls_dir, CA_KEY), _key_pem(ca_key))
    _write_private(os.path.join(tls_dir, CA_CERT), ca_cert.public_bytes(ser.Encoding.PEM))
    _write_private(os.path.join(tls_dir, KEY), _key_pem(key))
    _write_private(os.path.join(tls_dir, CERT), cert.public_bytes(ser.Encoding.PEM))


def issue(tls_dir: str, csr_der: bytes) -> tuple[bytes, bytes]:
    """(CA certificate, the member's certificate), DER: the CA in `tls_dir` signs the
    public key of a certificate request. Raises ValueError for a bad request."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    csr = x509.load_der_x509_csr(csr_der)
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature is wrong")
    public_key = csr.public_key()
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise ValueError("unsupported key type")
    with open(os.path.join(tls_dir, CA_KEY), "rb") as f:
        ca_key = ser.load_pem_private_key(f.read(), None)
    with open(os.path.join(tls_dir, CA_CERT), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    # The head names the member: what the request says of itself is not trusted.
    cert = _sign(ca_key, ca_cert, public_key, "raylite member", is_ca=False)
    return ca_cert.public_bytes(ser.Encoding.DER), cert.public_bytes(ser.Encoding.DER)


def _key_and_csr() -> tuple[bytes, bytes]:
    """(private key PEM, certificate request DER) made here: the key stays here."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser

    key = _new_key()
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("raylite member"))
    return _key_pem(key), csr.sign(key, hashes.SHA256()).public_bytes(ser.Encoding.DER)


def _pem(der: bytes) -> bytes:
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization as ser

    return bytes(x509.load_der_x509_certificate(der).public_bytes(ser.Encoding.PEM))


# --- SSL contexts -----------------------------------------------------------------------
class ClusterTLS:
    """The SSL contexts of one member, from its tls/ directory."""

    def __init__(self, tls_dir: str, *, enrols: bool = False) -> None:
        self.dir = tls_dir
        ca, cert, key = (os.path.join(tls_dir, n) for n in (CA_CERT, CERT, KEY))
        self.client = _context(ssl.PROTOCOL_TLS_CLIENT, ca, cert, key, ssl.CERT_REQUIRED)
        self.server = _context(ssl.PROTOCOL_TLS_SERVER, ca, cert, key, ssl.CERT_REQUIRED)
        # The head's node port takes members without a certificate, to enrol only.
        self.node_server = (
            _context(ssl.PROTOCOL_TLS_SERVER, ca, cert, key, ssl.CERT_OPTIONAL)
            if enrols
            else self.server
        )
        self.enrols = enrols
        # The dashboard: browsers have no cluster certificate (module doc).
        self.https = _context(ssl.PROTOCOL_TLS_SERVER, ca, cert, key, ssl.CERT_OPTIONAL)

    def wrap(self, sock: socket.socket, *, server_side: bool) -> TLSStream:
        """TLS over a connected TCP socket, handshake done (within its timeout);
        raises ssl.SSLError (an OSError) if the peer is not a member."""
        ctx = self.server if server_side else self.client
        return TLSStream(sock, ctx, server_side=server_side)

    @property
    def ca_file(self) -> str:
        return os.path.join(self.dir, CA_CERT)

    @property
    def cert_files(self) -> tuple[str, str]:
        return os.path.join(self.dir, CERT), os.path.join(self.dir, KEY)


def _context(
    protocol: int, ca: str, cert: str | None, key: str | None, verify: ssl.VerifyMode
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # a member, not a host name (module doc)
    else:
        ctx.num_tickets = 0  # no post-handshake messages (module doc)
    ctx.verify_mode = verify
    if ca:
        ctx.load_verify_locations(ca)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


_RECORD_CHUNK = 1 << 20  # plaintext encrypted per step: a bounded outgoing buffer
_RAW = 1 << 18


class TLSStream:
    """A TLS connection over a connected blocking socket, safe for one reader thread
    and any number of writer threads (module doc). It offers the calls transport.py
    makes on a socket: recv, recv_into, sendall, settimeout, setsockopt, shutdown,
    close, fileno, family."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool) -> None:
        self.sock = sock
        self.family = sock.family
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self._lock = threading.Lock()  # the SSL object: never held across socket calls
        self._send_lock = threading.Lock()  # encrypted bytes leave in the order made
        self._eof = False
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(_RAW)
                if not data:
                    raise ConnectionResetError("the peer closed during the TLS handshake")
                self._in.write(data)
        self._flush()

    def _flush(self) -> None:
        """Send what the SSL object has made (alerts, handshake, answers of a read)."""
        with self._send_lock:
            with self._lock:
                out = self._out.read()
            if out:
                self.sock.sendall(out)

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        with self._send_lock:
            for start in range(0, len(view), _RECORD_CHUNK):
                with self._lock:
                    self._tls.write(view[start : start + _RECORD_CHUNK])
                    out = self._out.read()
                self.sock.sendall(out)

    def recv(self, n: int) -> bytes:
        while True:
            with self._lock:
                try:
                    data = self._tls.read(n)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                pending = self._out.pending
            # Bytes a read made (an alert): sent now unless a writer is busy, which
            # then sends them before its own (it takes all that is made, in order).
            # Never wait for the send lock here: a writer blocked on a full socket
            # waits for the peer, whose reader may wait for ours.
            if pending and self._send_lock.acquire(blocking=False):
                try:
                    with self._lock:
                        out = self._out.read()
                    if out:
                        self.sock.sendall(out)
                finally:
                    self._send_lock.release()
            if data is not None:
                return data
            if self._eof:
                return b""
            raw = self.sock.recv(_RAW)
            with self._lock:
                if raw:
                    self._in.write(raw)
                else:
                    self._in.write_eof()
                    self._eof = True

    def recv_into(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        data = self.recv(len(view))
        view[: len(data)] = data
        return len(data)

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._tls.version()

    def settimeout(self, value: float | None) -> None:
        self.sock.settimeout(value)

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


def _bootstrap_context() -> ssl.SSLContext:
    """Enrolment's client side: no certificate yet and no CA to check the head's with;
    the token's proofs and MAC stand in for both (module doc)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def head_dir(session_dir: str, storage: str | None) -> str:
    """Where the head keeps the CA: its session dir; with a storage that outlives it
    (sqlite, redis), a dir of that storage's, so a head restarted on it keeps its CA
    and the nodes it had (their certificates) rejoin it."""
    if not storage or storage == "memory":
        return os.path.join(session_dir, DIR)
    key = hashlib.sha256(storage.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "raylite", "tls-ca", key)


def has_ca(tls_dir: str) -> bool:
    return all(os.path.exists(os.path.join(tls_dir, n)) for n in (CA_KEY, CA_CERT, KEY, CERT))


def has_tls(session_dir: str) -> bool:
    return bool(session_dir) and os.path.exists(os.path.join(session_dir, DIR, CERT))


def activate(tls_dir: str, *, enrols: bool = False) -> ClusterTLS:
    """From now on this process's TCP connections are TLS (transport.TLS)."""
    tls = ClusterTLS(tls_dir, enrols=enrols)
    transport.TLS = tls
    return tls


def activate_for(session_dir: str) -> bool:
    """A worker or a local driver: TLS if its node's session dir has tls/ (cheap when
    it has not: one stat, and neither ssl's contexts nor cryptography are touched)."""
    if not has_tls(session_dir):
        return False
    activate(os.path.join(session_dir, DIR))
    return True


# --- enrolment --------------------------------------------------------------------------
def _mac(token: bytes, server_nonce: bytes, client_nonce: bytes, ca: bytes, cert: bytes) -> bytes:
    msg = _ENROLLED + server_nonce + client_nonce + _BLOB.pack(len(ca)) + ca + cert
    return hmac.new(token, msg, hashlib.sha256).digest()


def _csr_context(csr_der: bytes) -> bytes:
    return _CSR + hashlib.sha256(csr_der).digest()


def _recv_blob(sock: socket.socket) -> bytes:
    (n,) = _BLOB.unpack(transport._recv_exact(sock, _BLOB.size))
    if n > _MAX_BLOB:
        raise ConnectionLost(f"an enrolment blob of {n} bytes")
    return transport._recv_exact(sock, n)


def probe(address: str, timeout: float | None = None) -> bool:
    """Whether the raylite server at tcp:HOST:PORT speaks TLS. A plain one sends its
    handshake's first bytes at once, which a TLS client reads as a broken record; a TLS
    one completes a TLS handshake. One connection, closed at once."""
    family, addr = transport.parse_address(address)
    if family != socket.AF_INET:
        return False
    wait = CONFIG.connect_timeout_s if timeout is None else timeout
    try:
        raw = socket.create_connection(addr, timeout=wait)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {address}: {exc}") from exc
    try:
        _bootstrap_context().wrap_socket(raw).close()  # the TLS handshake is in wrap_socket
        return True
    except ssl.SSLError:
        return False
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {address}: {exc}") from exc
    finally:
        raw.close()


def enrol(address: str, token: bytes, tls_dir: str, timeout: float | None = None) -> None:
    """Get a certificate for a key made here from the head at `address` (module doc);
    writes tls_dir/{node.key, node.crt, ca.crt}, all 0600.

    Raises AuthenticationError if the token does not match (either side's proof or
    the head's MAC), ConnectionLost if the head cannot be reached or is not TLS."""
    _, addr = transport.parse_address(address)
    wait = CONFIG.connect_timeout_s if timeout is None else timeout
    key_pem, csr_der = _key_and_csr()
    context = _csr_context(csr_der)
    try:
        raw = socket.create_connection(addr, timeout=wait)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {address}: {exc}") from exc
    try:
        sock = _bootstrap_context().wrap_socket(raw)
        hello = transport._recv_exact(sock, transport.SERVER_HELLO_SIZE)
        answer, expected = transport.client_answer(token, hello, context)
        sock.sendall(answer + _BLOB.pack(len(csr_der)) + csr_der)
        try:
            proof = transport._recv_exact(sock, transport.PROOF_SIZE)
        except (ConnectionLost, ConnectionResetError):
            raise AuthenticationError(transport.refused(address)) from None
        if not hmac.compare_digest(proof, expected):
            raise AuthenticationError(transport.impostor(address))
        ca, cert = _recv_blob(sock), _recv_blob(sock)
        mac = transport._recv_exact(sock, transport.PROOF_SIZE)
        server_nonce = hello[len(transport.MAGIC) :]
        client_nonce = answer[len(transport.MAGIC) : len(transport.MAGIC) + transport.NONCE_SIZE]
        if not hmac.compare_digest(mac, _mac(token, server_nonce, client_nonce, ca, cert)):
            raise AuthenticationError(transport.impostor(address))
    except (OSError, transport.ProtocolError) as exc:
        raise ConnectionLost(f"enrolling with {address} failed: {exc}") from exc
    finally:
        raw.close()
    _private_dir(tls_dir)
    _write_private(os.path.join(tls_dir, KEY), key_pem)
    _write_private(os.path.join(tls_dir, CERT), _pem(cert))
    _write_private(os.path.join(tls_dir, CA_CERT), _pem(ca))


def join(address: str, token: bytes, tls_dir: str, *, require: bool = False) -> bool:
    """A member about to join the cluster at `address`: enrol if it is a TLS cluster
    (then activate TLS here) and say whether it was. `require`: a plain cluster is an
    error (RAYLITE_TLS=1, `raylite start --tls --address=...`)."""
    if not probe(address):
        if require:
            raise ConnectionLost(
                f"the cluster at {address[4:]} does not speak TLS, and TLS was required"
            )
        return False
    enrol(address, token, tls_dir)
    activate(tls_dir)
    return True


def remote_dir() -> str:
    """Where a remote driver (no node on its machine) keeps its key: a private temp dir
    of its own, removed with the process by the caller."""
    return tempfile.mkdtemp(prefix="raylite-tls-")


async def serve_enrolment(reader: Any, writer: Any, token: bytes, tls_dir: str) -> None:
    """The head's side, on a TLS connection without a client certificate (module doc).
    Answers one enrolment, or closes without a word; never reads a frame."""
    import asyncio

    nonce, hello = transport.server_hello()
    try:
        writer.write(hello)
        answer = await asyncio.wait_for(
            reader.readexactly(transport.CLIENT_ANSWER_SIZE), CONFIG.handshake_timeout_s
        )
        (n,) = _BLOB.unpack(
            await asyncio.wait_for(reader.readexactly(_BLOB.size), CONFIG.handshake_timeout_s)
        )
        if n > _MAX_BLOB:
            return
        csr = await asyncio.wait_for(reader.readexactly(n), CONFIG.handshake_timeout_s)
        proof = transport.server_check(token, nonce, answer, _csr_context(csr))
        if proof is None:
            return
        loop = asyncio.get_running_loop()
        try:
            ca, cert = await loop.run_in_executor(None, issue, tls_dir, csr)
        except ValueError:
            return
        client_nonce = answer[len(transport.MAGIC) : len(transport.MAGIC) + transport.NONCE_SIZE]
        mac = _mac(token, nonce, client_nonce, ca, cert)
        writer.write(proof + _BLOB.pack(len(ca)) + ca + _BLOB.pack(len(cert)) + cert + mac)
        await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, OSError):
        return
    finally:
        writer.close()
