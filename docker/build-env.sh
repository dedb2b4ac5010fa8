#!/bin/sh
# Runs a build step ("$@") with the network settings of the build: used by the Dockerfiles' RUN steps that
# download (pip, the weights fetch). Nothing of it stays in a layer:
#   - a CA bundle (PEM, your proxy's root plus the public roots) comes as the BuildKit secret `ca_bundle`
#     (docker build --secret id=ca_bundle,src=corp-ca.pem): mounted at /run/secrets/ca_bundle for this step only,
#     then pip, requests and Python's ssl trust it instead of the image's default store;
#   - PIP_INDEX_URL (build argument): a package index mirror; empty means PyPI, so it is unset rather than
#     handed to pip as an empty URL.
set -eu
ca_bundle="${CA_BUNDLE_SECRET:-/run/secrets/ca_bundle}"
if [ -f "$ca_bundle" ]; then
    export PIP_CERT="$ca_bundle" SSL_CERT_FILE="$ca_bundle" REQUESTS_CA_BUNDLE="$ca_bundle"
fi
if [ -z "${PIP_INDEX_URL:-}" ]; then
    unset PIP_INDEX_URL
fi
exec "$@"
