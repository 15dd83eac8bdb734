"""Server layer: X.509 with `cryptography` — keys and CSRs, reading certificates, a test root.

Both CA adapters use it: the ACME adapter makes the key and CSR it finalizes an order with, and
reads the chain the CA returns; the simulated CA signs real certificates with its own test root.
Private keys are PEM strings kept by the adapter's own tables; nothing here hands one to the
domain, so no code path can put one into an API answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from domain.model import CertificateDocument, add_years

# What browsers and every public ACME CA accept, and fast to make (seeding issues many).
CURVE = ec.SECP256R1()
ROOT_YEARS = 20
# A certificate is valid from a minute before it was issued, so a clock skew of that much
# between the CA and a client does not reject it (Let's Encrypt backdates by an hour).
BACKDATE = timedelta(minutes=1)


def new_private_key_pem() -> str:
    key = ec.generate_private_key(CURVE)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _load_key(private_key_pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("certgraph keys are EC keys")
    return key


def csr_pem(private_key_pem: str, domains: tuple[str, ...]) -> str:
    """A CSR naming `domains` as subjectAltNames (the first also as the common name)."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
        )
        .sign(_load_key(private_key_pem), hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def document_from_pem(chain_pem: str) -> CertificateDocument:
    """The facts of the first (leaf) certificate of a PEM chain, with the chain as given."""
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    try:
        names = tuple(
            leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateDocument(
        pem=chain_pem,
        serial_number=f"{leaf.serial_number:x}",
        issuer=leaf.issuer.rfc4514_string(),
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        dns_names=names,
        sha256_fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
    )


@dataclass(frozen=True, slots=True)
class IssuedPair:
    """A certificate chain and the private key of its leaf."""

    chain_pem: str
    private_key_pem: str


@dataclass(frozen=True, slots=True)
class TestRoot:
    """A self-signed root that signs the simulated CA's certificates directly."""

    certificate_pem: str
    private_key_pem: str

    @classmethod
    def create(cls, now: datetime, name: str = "certgraph simulated CA root") -> TestRoot:
        key_pem = new_private_key_pem()
        key = _load_key(key_pem)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certgraph"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(add_years(now, ROOT_YEARS))
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem)

    def issue(self, domains: tuple[str, ...], issued_at: datetime, years: int) -> IssuedPair:
        """A new key and a leaf certificate for `domains`, valid `years` from `issued_at`.

        The chain is the leaf followed by this root, so a client can check it without more."""
        root = x509.load_pem_x509_certificate(self.certificate_pem.encode())
        root_key = _load_key(self.private_key_pem)
        key_pem = new_private_key_pem()
        public_key = _load_key(key_pem).public_key()
        # X.509 keeps whole seconds: the domain reads issuedAt and expiresAt back from here.
        start = issued_at.replace(microsecond=0)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .issuer_name(root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(add_years(start, years))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM).decode() + self.certificate_pem
        return IssuedPair(chain, key_pem)
