#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with "bench", the benchmarks)
# need, only those that are missing. Needs root or sudo when something is
# missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have swaks   || need+=(swaks)
# swaks needs these for --tls and --auth.
perl -MNet::SSLeay -e1 2>/dev/null    || need+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 2>/dev/null || need+=(libio-socket-ssl-perl)
perl -MAuthen::SASL -e1 2>/dev/null   || need+=(libauthen-sasl-perl)
have python3 || need+=(python3)
have protoc  || need+=(protobuf-compiler)
if [ "${1:-}" = bench ]; then
	have smtp-source || [ -x /usr/sbin/smtp-source ] || need+=(postfix)
fi

# The protobuf generators, pinned, for the test that checks the generated
# code is current.
gobin="$(go env GOPATH)/bin"
[ -x "$gobin/protoc-gen-go" ] || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ -x "$gobin/protoc-gen-go-grpc" ] || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
if [[ " ${need[*]} " == *" postfix "* ]]; then
	# Install postfix without letting it configure or start a system MTA.
	echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${need[@]}" >/tmp/sluice-apt.log 2>&1; then
	$sudo apt-get update >>/tmp/sluice-apt.log 2>&1
	$sudo apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/sluice-apt.log 2>&1 || {
		echo "apt-get install failed; see /tmp/sluice-apt.log"; tail -20 /tmp/sluice-apt.log; exit 1; }
fi
