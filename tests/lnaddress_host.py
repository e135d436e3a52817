"""A Lightning-address host (LUD-16) for tests: `name@pay.satmachine.test` resolves,
through LNbits' own LNURL helper, to a local HTTPS server whose callback issues a real
invoice on an LNbits wallet.

A Lightning address is always fetched over HTTPS on port 443 from a public name, so
three pieces of the internet are stood in for, and nothing else:
- DNS: the test host name (and only it) resolves to a loopback address of its own
  (127.x.y.z, so two test processes never collide on port 443);
- the public CA system: a CA made for the test signs the host's certificate, and is
  the bundle httpx verifies against while the host runs (hostname, SNI and chain are
  checked as for any real host);
- port 443 itself, which needs root (or a lowered ip_unprivileged_port_start); where
  it cannot be bound the tests that need the host are skipped, with that reason.
"""

import asyncio
import datetime
import json
import random
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

HOST = "pay.satmachine.test"


async def invoice_on(wallet_id: str, amount_msat: int, memo: str) -> str:
    """What an LNURL-pay callback answers: a real invoice on an LNbits wallet."""
    from lnbits.core.services import create_invoice

    payment = await create_invoice(
        wallet_id=wallet_id, amount=amount_msat // 1000, memo=memo, internal=True
    )
    return payment.bolt11


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate chain, server key) for HOST."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "satmachine test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    bundle, chain, key_file = (
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
    )
    bundle.write_bytes(ca.public_bytes(pem))
    chain.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return bundle, chain, key_file


class LightningAddressHost:
    """HTTPS on <loopback>:443 serving /.well-known/lnurlp/<name> for the registered
    names. `requests` lists every path asked for (callbacks carry the amount)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: Any):
        import httpx._config

        self.loop = loop
        self.wallets: dict[str, str] = {}
        self.requests: list[str] = []
        self.address = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        folder = Path(tempfile.mkdtemp(prefix="satmachine-lnaddress-"))
        bundle, chain, key_file = _certificates(folder)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                host.requests.append(self.path)
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                body: Optional[dict] = None
                if parts[:2] == [".well-known", "lnurlp"] and len(parts) in (3, 4):
                    name = parts[2]
                    if name in host.wallets and len(parts) == 3:
                        body = {
                            "tag": "payRequest",
                            "callback": f"https://{HOST}/.well-known/lnurlp/{name}/cb",
                            "minSendable": 1_000,
                            "maxSendable": 100_000_000,
                            "metadata": json.dumps(
                                [
                                    ["text/plain", f"pay {name}"],
                                    ["text/identifier", f"{name}@{HOST}"],
                                ]
                            ),
                            "commentAllowed": 255,
                        }
                    elif name in host.wallets and parts[3] == "cb":
                        amount_msat = int(parse_qs(url.query)["amount"][0])
                        future = asyncio.run_coroutine_threadsafe(
                            host.invoice(name, amount_msat), host.loop
                        )
                        body = {"pr": future.result(timeout=10), "routes": []}
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer((self.address, 443), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(name: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(name, str) and name.lower().rstrip(".") == HOST:
                return [
                    (
                        socket.AF_INET,
                        socket.SOCK_STREAM,
                        socket.IPPROTO_TCP,
                        "",
                        (self.address, int(port or 443)),
                    )
                ]
            return real_getaddrinfo(name, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(httpx._config.SSLConfig, "DEFAULT_CA_BUNDLE_PATH", bundle)

    def register(self, name: str, wallet_id: str) -> str:
        """`name@HOST` now pays into the LNbits wallet `wallet_id`."""
        self.wallets[name] = wallet_id
        return f"{name}@{HOST}"

    async def invoice(self, name: str, amount_msat: int) -> str:
        return await invoice_on(
            self.wallets[name], amount_msat, f"lightning address {name}"
        )

    def callbacks(self, name: str) -> list[int]:
        """The amounts (msat) the host was asked to invoice for `name`."""
        return [
            int(parse_qs(urlparse(path).query)["amount"][0])
            for path in self.requests
            if urlparse(path).path == f"/.well-known/lnurlp/{name}/cb"
        ]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_host(loop: asyncio.AbstractEventLoop, monkeypatch: Any) -> Any:
    """A running host, or the reason one cannot run here (pytest skips with it)."""
    try:
        return LightningAddressHost(loop, monkeypatch)
    except PermissionError:
        return "binding port 443 for the Lightning-address host needs root"
