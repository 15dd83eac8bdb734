"""Server layer: certificate authority adapters behind the domain's CA port."""
