#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with "bench", the benchmarks)
# need, only those that are missing, without letting any of them start a
# system service: the tests start their own private instances on loopback.
# Needs root or sudo when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

have swaks   || need+=(swaks)
# swaks needs these for --tls and --auth.
perl -MNet::SSLeay -e1 2>/dev/null    || need+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 2>/dev/null || need+=(libio-socket-ssl-perl)
perl -MAuthen::SASL -e1 2>/dev/null   || need+=(libauthen-sasl-perl)
have python3 || need+=(python3)
# mbsync (isync) syncs a Maildir with the IMAP server in the client tests.
have mbsync  || need+=(isync)
have protoc  || need+=(protobuf-compiler)
# The filter plugins' tests run a real clamd and a real rspamd.
have clamd   || need+=(clamav-daemon)
have clamdscan || need+=(clamdscan)
[ -d /usr/share/clamav-testfiles ] || need+=(clamav-testfiles)
have rspamd  || need+=(rspamd)
# Remote delivery is tested against a real Postfix (as the gateway's next
# hop), and DKIM signatures with an independent verifier (dkimpy).
have smtp-sink || need+=(postfix)
/usr/bin/python3 -c 'import dkim, nacl' 2>/dev/null || need+=(python3-dkim)
# The POP3 and IMAP servers are tested with fetchmail as a real client.
have fetchmail || need+=(fetchmail)
if [ "${1:-}" = bench ]; then
	# SpamAssassin's spamd, to compare the spam filter with.
	have spamd || need+=(spamassassin spamd spamc)
	# Dovecot, the IMAP and POP3 server the imap and pop3 sections compare
	# Sluice with (a private instance; the system one is never started).
	[ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
	[ -x /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
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
	# Install postfix without letting it configure a system MTA.
	echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
fi
# Keep the packages' services from starting (clamav-daemon, freshclam,
# rspamd, spamd, dovecot): policy-rc.d refusing everything is Debian's way.
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
	$sudo chmod +x /usr/sbin/policy-rc.d
	made_policy=1
fi
cleanup() { [ -n "$made_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d; true; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
# "sa-compile-" keeps SpamAssassin's rule compiler (and a compiler) out.
extra=()
[[ " ${need[*]} " == *" spamassassin "* ]] && extra+=(sa-compile-)
if ! $sudo apt-get install -y --no-install-recommends "${need[@]}" "${extra[@]}" >/tmp/sluice-apt.log 2>&1; then
	$sudo apt-get update >>/tmp/sluice-apt.log 2>&1
	$sudo apt-get install -y --no-install-recommends "${need[@]}" "${extra[@]}" >>/tmp/sluice-apt.log 2>&1 || {
		echo "apt-get install failed; see /tmp/sluice-apt.log"; tail -20 /tmp/sluice-apt.log; exit 1; }
fi
# Where systemd runs, do not leave the services enabled for the next boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	for svc in clamav-daemon clamav-freshclam rspamd spamd spamassassin dovecot; do
		$sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
	done
fi
