"""Server layer: `python -m server` serves the API as `certgraph serve` does (see `serving`)."""

from server.http.serving import main

main()
