#!/usr/bin/env bash
# Dev PKI with the openssl CLI (as in the seeds): root CA → intermediate → server cert for
# localhost and two partner client certificates, plus a PKCS#12 bundle for Postman.
#   certs/gen-certs.sh            # ECDSA P-256 into certs/out/
#   KEY=rsa certs/gen-certs.sh    # RSA 2048
#   OUT=/tmp/pki certs/gen-certs.sh
# DEV ONLY. `gatehouse demo` makes an equivalent PKI itself; this script is for people who
# want the files (and the .p12) without running the demo.
set -euo pipefail
OUT=${OUT:-$(dirname "$0")/out}
KEY=${KEY:-ec}
P12_PASS=${P12_PASS:-gatehouse}
mkdir -p "$OUT"; cd "$OUT"

newkey() { # file
  if [ "$KEY" = rsa ]; then openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
  else openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; fi
}

# sign NAME SUBJECT ISSUER EXTENSIONS DAYS
sign() {
  newkey "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$4" > "$1.ext"
  if [ "$3" = self ]; then
    openssl x509 -req -in "$1.csr" -signkey "$1.key" -days "$5" -sha256 -extfile "$1.ext" -out "$1.crt"
  else
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days "$5" -sha256 -extfile "$1.ext" -out "$1.crt"
  fi
  rm -f "$1.csr" "$1.ext"
}

CA_EXT='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n'
sign root-ca "/O=Gatehouse Dev/CN=Gatehouse Dev Root CA" self "$CA_EXT" 3650
sign intermediate-ca "/O=Gatehouse Dev/CN=Gatehouse Dev Intermediate CA" root-ca "${CA_EXT/CA:TRUE/CA:TRUE,pathlen:0}authorityKeyIdentifier=keyid\n" 1825
LEAF='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n'
sign server "/O=Gatehouse Dev/CN=localhost" intermediate-ca "${LEAF}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n" 365
sign partner-a "/O=partner-a Ltd/CN=partner-a" intermediate-ca "${LEAF}extendedKeyUsage=clientAuth\nsubjectAltName=DNS:api.partner-a.example,URI:spiffe://partner-a.example/ns/prod/sa/billing\n" 365
sign partner-b "/O=partner-b Ltd/CN=partner-b" intermediate-ca "${LEAF}extendedKeyUsage=clientAuth\n" 365

# PEM files as the demo writes them: leaf + intermediate; keys as PKCS#8
cp root-ca.crt root-ca.pem; cp intermediate-ca.crt intermediate-ca.pem
for n in server partner-a partner-b; do
  cat "$n.crt" intermediate-ca.crt > "$n.pem"
  openssl pkcs8 -topk8 -nocrypt -in "$n.key" -out "$n.key.tmp" && mv "$n.key.tmp" "$n.key"
done
openssl pkcs12 -export -in partner-a.pem -inkey partner-a.key -certfile root-ca.pem \
  -name partner-a -passout "pass:$P12_PASS" -out partner-a.p12
# the key Gatehouse signs the upstream's JWTs with (token_signing; never leaves Gatehouse)
[ -f gatehouse-signing.key ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out gatehouse-signing.key
rm -f ./*.srl
echo "dev PKI in $(pwd): root-ca.pem, intermediate-ca.pem, server.pem/.key, partner-{a,b}.pem/.key, partner-a.p12 (password: $P12_PASS), gatehouse-signing.key"
for n in partner-a partner-b; do
  printf '%s SHA-256 thumbprint: ' "$n"; openssl x509 -in "$n.crt" -noout -fingerprint -sha256 | cut -d= -f2
done
