package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// Validate checks the values that the YAML types alone cannot, fills in the
// values derived from others (hostname, normalised domains), and returns
// every problem found, each located at the line that set the key.
func (c *Config) Validate() error {
	v := validator{c: c}

	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			v.errf("hostname", "empty, and the machine's hostname is unknown: set hostname")
		}
		c.Hostname = h
	}
	if c.Hostname != "" {
		h, err := address.ParseDomain(c.Hostname)
		if err != nil || strings.HasPrefix(h, "[") {
			v.errf("hostname", "%q is not a valid host name", c.Hostname)
		} else {
			c.Hostname = h
		}
	}
	if strings.TrimSpace(c.DataDir) == "" {
		v.errf("data_dir", "must not be empty")
	}
	if u := c.RunAs; u != "" && (strings.TrimSpace(u) != u || u == "root" || u == "0") {
		v.errf("run_as", "%q: must be an unprivileged user, not root", u)
	}
	switch u := c.PluginUser; {
	case u == "":
	case strings.TrimSpace(u) != u || u == "root" || u == "0":
		v.errf("plugin_user", "%q: must be an unprivileged user, not root", u)
	case c.RunAs == "":
		v.errf("plugin_user", "needs run_as: the plugins can only run as a user of their own when the server does not stay root")
	}
	seen := map[string]bool{}
	for i, d := range c.Domains {
		key := fmt.Sprintf("domains[%d]", i)
		n, err := address.ParseDomain(d)
		if err != nil || strings.HasPrefix(n, "[") {
			v.errf(key, "%q is not a valid domain", d)
			continue
		}
		if seen[n] {
			v.errf(key, "%q is listed twice", d)
		}
		seen[n] = true
		c.Domains[i] = n
	}

	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")

	v.oneOf("tls.min_version", c.TLS.MinVersion, "1.2", "1.3")
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		v.errf("tls", "cert_file and key_file must be set together")
	}
	haveTLS := c.TLS.CertFile != "" || c.TLS.SelfSigned
	if c.TLS.CertFile != "" && c.TLS.SelfSigned {
		v.errf("tls.self_signed", "cannot be combined with cert_file and key_file")
	}

	listeners := map[string]string{}
	for _, l := range []struct {
		key      string // of the list, such as smtp.mx.listen
		addrs    []string
		needsTLS bool
	}{
		{"smtp.mx.listen", c.SMTP.MX.Listen, false},
		{"smtp.submission.listen", c.SMTP.Submission.Listen, true},
		{"smtp.submissions.listen", c.SMTP.Submissions.Listen, true},
		{"imap.listen", c.IMAP.Listen, false},
		{"imap.listen_tls", c.IMAP.ListenTLS, true},
		{"pop3.listen", c.POP3.Listen, false},
		{"pop3.listen_tls", c.POP3.ListenTLS, true},
		{"web.listen", c.Web.Listen, true},
	} {
		owner := strings.TrimSuffix(l.key, ".listen")
		for i, addr := range l.addrs {
			key := fmt.Sprintf("%s[%d]", l.key, i)
			if err := checkHostPort(addr); err != nil {
				v.errf(key, "%v", err)
				continue
			}
			if other, dup := listeners[addr]; dup {
				v.errf(key, "%s is also used by %s", addr, other)
			}
			listeners[addr] = owner
		}
		if l.needsTLS && len(l.addrs) > 0 && !haveTLS {
			v.errf(owner, "needs TLS: set tls.cert_file and tls.key_file (or tls.self_signed for development)")
		}
	}

	v.positive("smtp.max_message_size", int64(c.SMTP.MaxMessageSize))
	v.atLeast("smtp.max_recipients", c.SMTP.MaxRecipients, 1)
	v.atLeast("smtp.max_line_length", c.SMTP.MaxLineLength, 1024)
	v.atLeast("smtp.max_hops", c.SMTP.MaxHops, 1)
	v.sizeAtLeast("smtp.max_header_size", c.SMTP.MaxHeaderSize, 64<<10)
	v.atLeast("smtp.max_header_fields", c.SMTP.MaxHeaderFields, 100)
	v.sizeAtLeast("smtp.max_header_field_length", c.SMTP.MaxHeaderFieldSize, 1000)
	v.atLeast("smtp.max_mime_depth", c.SMTP.MaxMIMEDepth, 10)
	v.atLeast("smtp.max_mime_parts", c.SMTP.MaxMIMEParts, 100)
	v.atLeast("smtp.max_errors", c.SMTP.MaxErrors, 1)
	v.positive("smtp.read_timeout", int64(c.SMTP.ReadTimeout))
	v.positive("smtp.write_timeout", int64(c.SMTP.WriteTimeout))
	v.atLeast("smtp.min_data_rate", int(c.SMTP.MinDataRate), 0)
	v.atLeast("smtp.tarpit_after", c.SMTP.TarpitAfter, 0)
	v.atLeast("smtp.max_connections", c.SMTP.MaxConnections, 1)
	v.atLeast("smtp.max_connections_per_ip", c.SMTP.MaxConnectionsPerIP, 1)

	v.atLeast("imap.max_connections", c.IMAP.MaxConnections, 1)
	v.atLeast("imap.max_connections_per_ip", c.IMAP.MaxConnectionsPerIP, 1)
	v.atLeast("pop3.max_connections", c.POP3.MaxConnections, 1)
	v.atLeast("pop3.max_connections_per_ip", c.POP3.MaxConnectionsPerIP, 1)
	v.positive("pop3.read_timeout", int64(c.POP3.ReadTimeout))
	v.positive("web.idle_timeout", int64(c.Web.IdleTimeout))
	v.atLeast("web.max_connections", c.Web.MaxConnections, 1)
	v.atLeast("web.max_connections_per_ip", c.Web.MaxConnectionsPerIP, 1)
	v.positive("web.max_lifetime", int64(c.Web.MaxLifetime))

	v.atLeast("queue.local_workers", c.Queue.LocalWorkers, 1)
	v.positive("queue.retry_after", int64(c.Queue.RetryAfter))
	v.atLeast("queue.hold_after", c.Queue.HoldAfter, 1)

	if d := c.Store.RecipientDelimiter; d != "" {
		if len(d) != 1 || strings.ContainsAny(d, "@\" \t.") || d[0] < 0x21 || d[0] > 0x7e {
			v.errf("store.recipient_delimiter", "%q must be one printable character other than @, \" and .", d)
		}
	}

	v.atLeast("auth.max_failures_per_ip", c.Auth.MaxFailuresPerIP, 1)
	v.atLeast("auth.max_failures_per_user", c.Auth.MaxFailuresPerUser, 1)
	v.positive("auth.failure_window", int64(c.Auth.FailureWindow))
	v.atLeast("auth.min_password_length", c.Auth.MinPasswordLength, 1)
	// 1024 is auth.MaxPasswordLength, the longest password in bytes
	// (core/config does not import core/auth).
	v.atMost("auth.min_password_length", c.Auth.MinPasswordLength, 1024)

	v.pipelines()
	v.delivery()

	if len(v.errs) > 0 {
		// Report in file order, as parse errors are.
		slices.SortStableFunc(v.errs, func(a, b *Error) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			return a.Col - b.Col
		})
		return v.errs
	}
	return nil
}

// Warnings returns what is valid but most likely a mistake, each located
// like the errors of Validate: submission listeners without a senderpolicy
// stage in the outbound pipeline let any authenticated user send as
// anyone. Call it on a validated config.
func (c *Config) Warnings() Errors {
	v := validator{c: c}
	if len(c.SMTP.Submission.Listen)+len(c.SMTP.Submissions.Listen) > 0 && !c.HasStage(PipelineOutbound, "senderpolicy") {
		key := "smtp.submission"
		if len(c.SMTP.Submission.Listen) == 0 {
			key = "smtp.submissions"
		}
		v.errf(key, "there is no senderpolicy stage in the outbound pipeline, so an authenticated user can send as anyone: add one (see configs/standalone.yaml)")
	}
	return v.errs
}

// HasStage reports whether the named pipeline has a stage running the
// given plugin (a built-in by name, or a program of that base name).
func (c *Config) HasStage(pipeline, plugin string) bool {
	for _, st := range c.Pipelines[pipeline] {
		if StagePluginName(st.Plugin) == plugin {
			return true
		}
	}
	return false
}

type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) errf(key, format string, args ...any) {
	p := v.c.lines[key]
	if p.line == 0 {
		// Point at the nearest enclosing key that was written.
		for k := key; k != "" && p.line == 0; {
			i := strings.LastIndexAny(k, ".[")
			if i < 0 {
				break
			}
			k = k[:i]
			p = v.c.lines[k]
		}
	}
	file := v.c.file
	if file == "" {
		file = "(defaults)"
	}
	v.errs = append(v.errs, &Error{File: file, Line: p.line, Col: p.col, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.errf(key, "%q is not one of %s", val, strings.Join(allowed, ", "))
}

// texts returns the text of each value, for oneOf.
func texts[T any](vals []T) []string {
	out := make([]string, len(vals))
	for i, x := range vals {
		out[i] = fmt.Sprint(x)
	}
	return out
}

func (v *validator) atLeast(key string, val, min int) {
	if val < min {
		v.errf(key, "%d is below the minimum of %d", val, min)
	}
}

func (v *validator) atMost(key string, val, max int) {
	if val > max {
		v.errf(key, "%d is above the maximum of %d", val, max)
	}
}

func (v *validator) sizeAtLeast(key string, val, min Size) {
	if val < min {
		v.errf(key, "%v is below the minimum of %v", val, min)
	}
}

func (v *validator) positive(key string, val int64) {
	if val <= 0 {
		v.errf(key, "must be greater than zero")
	}
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port", addr)
	}
	if host != "" && net.ParseIP(host) == nil {
		if _, err := address.ParseDomain(host); err != nil {
			return fmt.Errorf("%q: bad host", addr)
		}
	}
	return nil
}

// Pipeline names.
const (
	PipelineInbound  = "inbound"
	PipelineOutbound = "outbound"
)

func (v *validator) pipelines() {
	names := make([]string, 0, len(v.c.Pipelines))
	for name := range v.c.Pipelines {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, pname := range names {
		key := "pipelines." + pname
		if pname != PipelineInbound && pname != PipelineOutbound {
			v.errf(key, "unknown pipeline %q (inbound or outbound)", pname)
			continue
		}
		seen := map[string]bool{}
		for i := range v.c.Pipelines[pname] {
			st := &v.c.Pipelines[pname][i]
			sk := fmt.Sprintf("%s[%d]", key, i)
			if strings.TrimSpace(st.Plugin) == "" {
				v.errf(sk, "plugin is required")
				continue
			}
			if st.Name == "" {
				st.Name = StagePluginName(st.Plugin)
			}
			if !validStageName(st.Name) {
				v.errf(sk+".name", "%q: use letters, digits, - and _", st.Name)
			}
			if seen[st.Name] {
				v.errf(sk+".name", "two stages are named %q in pipeline %s; give one a name", st.Name, pname)
			}
			seen[st.Name] = true
			if st.SHA256 != "" {
				if b, err := hex.DecodeString(st.SHA256); err != nil || len(b) != 32 {
					v.errf(sk+".sha256", "must be 64 hex digits")
				}
			}
			for j, h := range st.Hooks {
				v.oneOf(fmt.Sprintf("%s.hooks[%d]", sk, j), string(h), texts(verdict.StageHooks())...)
			}
			v.positive(sk+".timeout", int64(st.Timeout))
			if st.MaxConcurrency < 0 {
				v.errf(sk+".max_concurrency", "must not be negative (0 means no limit)")
			}
			v.positive(sk+".queue_timeout", int64(st.QueueTimeout))
			v.oneOf(sk+".on_error", string(st.OnError), texts(OnErrors())...)
			if st.Actions.Reject != "" {
				v.oneOf(sk+".actions.reject", st.Actions.Reject, texts(rejectMappings)...)
			}
			if st.Actions.Quarantine != "" {
				v.oneOf(sk+".actions.quarantine", st.Actions.Quarantine, texts(quarantineMappings)...)
			}
			for name, t := range map[string]float64{"junk_at": st.Actions.JunkAt, "quarantine_at": st.Actions.QuarantineAt, "reject_at": st.Actions.RejectAt} {
				if t < 0 {
					v.errf(sk+".actions."+name, "must not be negative")
				}
			}
		}
	}
}

// StagePluginName is the default name of a stage: the plugin's name, or
// the base name of its path without an extension.
func StagePluginName(plugin string) string {
	base := filepath.Base(plugin)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

func validStageName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// TLS modes of remote delivery and routes.
var (
	remoteTLSModes = []string{"opportunistic", "require", "verify"}
	routeTLSModes  = []string{"none", "opportunistic", "require", "verify", "implicit"}
)

func (v *validator) delivery() {
	c := v.c
	for i, srv := range c.DNS.Servers {
		if err := checkHostPort(srv); err != nil {
			v.errf(fmt.Sprintf("dns.servers[%d]", i), "%v", err)
		}
	}
	v.positive("dns.timeout", int64(c.DNS.Timeout))
	r := c.Remote
	if r.Port < 1 || r.Port > 65535 {
		v.errf("remote.port", "%d is not a port", r.Port)
	}
	v.atLeast("remote.workers", r.Workers, 1)
	v.atLeast("remote.per_destination", r.PerDestination, 1)
	v.atLeast("remote.messages_per_connection", r.MessagesPerConn, 1)
	v.positive("remote.connect_timeout", int64(r.ConnectTimeout))
	v.positive("remote.command_timeout", int64(r.CommandTimeout))
	v.positive("remote.data_timeout", int64(r.DataTimeout))
	v.positive("remote.max_age", int64(r.MaxAge))
	if len(r.Retry) == 0 {
		v.errf("remote.retry", "needs at least one wait")
	}
	for i, d := range r.Retry {
		v.positive(fmt.Sprintf("remote.retry[%d]", i), int64(d))
	}
	for dom, mode := range r.TLS {
		key := "remote.tls." + dom
		if n, err := address.ParseDomain(dom); err != nil || strings.HasPrefix(n, "[") {
			v.errf(key, "%q is not a domain", dom)
		}
		v.oneOf(key, mode, remoteTLSModes...)
	}
	for i, n := range c.SMTP.RelayNetworks {
		if _, err := ParsePrefix(n); err != nil {
			v.errf(fmt.Sprintf("smtp.relay_networks[%d]", i), "%v", err)
		}
	}
	local := map[string]bool{}
	for _, d := range c.Domains {
		local[d] = true
	}
	routed := map[string]int{}
	for i := range c.Routes {
		rt := &c.Routes[i]
		key := fmt.Sprintf("routes[%d]", i)
		if len(rt.Domains) == 0 {
			v.errf(key+".domains", "a route needs at least one domain, or \"*\"")
		}
		for j, d := range rt.Domains {
			dk := fmt.Sprintf("%s.domains[%d]", key, j)
			if d != "*" {
				n, err := address.ParseDomain(d)
				if err != nil || strings.HasPrefix(n, "[") {
					v.errf(dk, "%q is not a domain", d)
					continue
				}
				rt.Domains[j], d = n, n
				if local[n] {
					v.errf(dk, "%s is a local domain; its mail is delivered here, not routed", n)
				}
			}
			if prev, dup := routed[d]; dup {
				v.errf(dk, "%s is already routed by routes[%d]", d, prev)
			}
			routed[d] = i
		}
		if strings.TrimSpace(rt.Host) == "" {
			v.errf(key+".host", "a route needs a host")
		} else if err := checkHostPort(net.JoinHostPort(rt.Host, "25")); err != nil {
			v.errf(key+".host", "%q is not a host name or address", rt.Host)
		}
		if rt.Port < 1 || rt.Port > 65535 {
			v.errf(key+".port", "%d is not a port", rt.Port)
		}
		v.oneOf(key+".tls", rt.TLS, routeTLSModes...)
		if rt.Auth.Username != "" && rt.Auth.PasswordFile == "" {
			v.errf(key+".auth", "username needs a password_file")
		}
		if rt.Auth.Username != "" && rt.TLS == "none" {
			v.errf(key+".auth", "AUTH is only sent over TLS: tls must not be none")
		}
		v.oneOf(key+".verify", rt.Verify, "none", "list", "callout")
		if rt.Verify == "list" && len(rt.Users) == 0 {
			v.errf(key+".users", "verify: list needs the list of users")
		}
		for j, u := range rt.Users {
			if strings.HasPrefix(u, "@") {
				if _, err := address.ParseDomain(u[1:]); err != nil {
					v.errf(fmt.Sprintf("%s.users[%d]", key, j), "%q is not @domain", u)
				}
				continue
			}
			if a, err := address.Parse(u); err != nil || a.IsNull() {
				v.errf(fmt.Sprintf("%s.users[%d]", key, j), "%q is not an address", u)
			}
		}
		v.positive(key+".callout_cache", int64(rt.CalloutCache))
	}
}

// ParsePrefix parses an address range: CIDR, or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address range such as 10.0.0.0/8", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
