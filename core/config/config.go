// Package config holds Sluice's configuration: the YAML structs, their
// documented defaults, and Load and Validate, which report problems as
// FILE:LINE: messages.
//
// Every field carries two struct tags besides yaml: `default`, the value
// the field has when the YAML leaves it out (written as YAML), and `doc`,
// one or two sentences for administrators. The defaults are applied and the
// config reference in README.md is generated from these tags (see
// Reference), so the documentation cannot drift from the code.
//
// Relative paths in the config are relative to the working directory of the
// process, except where a field says otherwise.
package config

import "github.com/sluice-mail/sluice/sdk/verdict"

// Config is the whole of a sluice.yaml file.
type Config struct {
	Hostname   string   `yaml:"hostname" doc:"The name Sluice gives itself in its SMTP greeting, in EHLO and in Received headers. Empty means the machine's hostname."`
	DataDir    string   `yaml:"data_dir" default:"/var/lib/sluice" doc:"Where the queue, the mailboxes, the generated certificate and the admin socket live. Created on first start."`
	Domains    []string `yaml:"domains" doc:"Local domains that are created at start-up if they do not exist yet. More can be added at run time with 'sluice domain add'."`
	RunAs      string   `yaml:"run_as" doc:"The unprivileged user (a name or a numeric ID) that 'sluice serve' runs as when started as root: it binds its ports, reads the certificate and starts the plugins as this user, makes it the owner of everything in data_dir, then switches to it and its groups for good. The plugins, which parse hostile mail, run as this user too, unless plugin_user is set. Empty means no switch: started as root, the server stays root and says so in its log."`
	PluginUser string   `yaml:"plugin_user" doc:"Another unprivileged user (a name or a numeric ID) that the plugins run as, so that a plugin taken over by hostile mail cannot read the mailboxes or the queue: the server hands the plugins what they check. Needs run_as and 'sluice serve' started as root: a small launcher process keeps root to start plugins as this user, also after the server has switched to run_as (crash restarts, reloads), and runs only the plugin programs the config named when the server started. Each plugin's state directory (data_dir/plugins/PIPELINE-STAGE) belongs to this user; the store and the queue stay run_as's alone. Empty, or the same as run_as, means the plugins run as run_as."`

	Log   Log   `yaml:"log" doc:"Logging."`
	TLS   TLS   `yaml:"tls" doc:"The certificate used by STARTTLS and the implicit-TLS listeners."`
	SMTP  SMTP  `yaml:"smtp" doc:"The SMTP listeners and their limits."`
	Queue Queue `yaml:"queue" doc:"The durable queue that holds accepted mail until it is delivered."`
	Store Store `yaml:"store" doc:"Mailboxes and accounts."`
	Auth  Auth  `yaml:"auth" doc:"Password checks and login throttling for SMTP AUTH, IMAP and POP3, and the rules for new passwords."`
	IMAP  IMAP  `yaml:"imap" doc:"Mailbox access over IMAP (RFC 9051 and RFC 3501)."`
	POP3  POP3  `yaml:"pop3" doc:"Mailbox access over POP3 (RFC 1939): INBOX only."`
	Web   Web   `yaml:"web" doc:"The web interface over HTTPS (in progress): so far, logging in and out with the same passwords and login throttling as IMAP and POP3."`

	DNS    DNS     `yaml:"dns" doc:"How Sluice looks up MX and address records for delivery."`
	Remote Remote  `yaml:"remote" doc:"Delivery to other servers: MX lookup, retries, bounces."`
	Routes []Route `yaml:"routes" doc:"Next hops: mail for the listed domains (or, with \"*\", all mail to other domains) goes to a fixed server instead of the domain's MX. This is how Sluice works as a company's gateway: it accepts mail for the company's domains on port 25, filters it and hands it to the internal server."`

	Plugins   Plugins            `yaml:"plugins" doc:"Where the filter plugins are."`
	Pipelines map[string][]Stage `yaml:"pipelines" doc:"The filter pipelines, each a list of stages run on every message: inbound for mail from other servers (the MX listener), outbound for mail from authenticated users. A pipeline left out has no stages."`

	file  string              // where the config came from, for messages
	lines map[string]position // key path -> where it was set
}

// File returns the name the config was loaded from, or "" for Default.
func (c *Config) File() string { return c.file }

// Log configures the process log, which goes to stderr.
type Log struct {
	Format string `yaml:"format" default:"text" doc:"text (key=value lines) or json (one object per line)."`
	Level  string `yaml:"level" default:"info" doc:"debug, info, warn or error."`
}

// TLS configures the server certificate.
type TLS struct {
	CertFile   string `yaml:"cert_file" doc:"PEM file with the certificate chain, leaf first."`
	KeyFile    string `yaml:"key_file" doc:"PEM file with the private key of cert_file."`
	SelfSigned bool   `yaml:"self_signed" default:"false" doc:"When cert_file and key_file are empty, generate a self-signed certificate for hostname into data_dir/tls on first start. Meant for development and tests: clients will warn about it."`
	MinVersion string `yaml:"min_version" default:"\"1.2\"" doc:"The oldest TLS version accepted: 1.2 or 1.3."`
}

// SMTP configures the three SMTP listeners and the limits they share.
type SMTP struct {
	MX          Listener `yaml:"mx" doc:"Mail from other servers (port 25). No AUTH; accepts mail only for local domains."`
	Submission  Listener `yaml:"submission" doc:"Mail from our own users (port 587). Offers STARTTLS and requires AUTH before MAIL."`
	Submissions Listener `yaml:"submissions" doc:"Mail from our own users over implicit TLS (port 465). Requires AUTH before MAIL."`

	MaxMessageSize      Size     `yaml:"max_message_size" default:"50MiB" doc:"The largest message accepted, advertised with SIZE. Larger messages get 552 5.3.4."`
	MaxRecipients       int      `yaml:"max_recipients" default:"100" doc:"Recipients per message; further RCPT commands get 452 4.5.3. RFC 5321 requires at least 100."`
	MaxLineLength       int      `yaml:"max_line_length" default:"4096" doc:"The longest line, command or message line, in octets. A longer line gets 500 5.5.2 and the connection is closed. RFC 5321 allows 512 for commands and 1000 for text; the default leaves room for mailers that exceed the latter."`
	MaxHops             int      `yaml:"max_hops" default:"50" doc:"A message with more Received headers than this is a mail loop and gets 554 5.4.6."`
	MaxHeaderSize       Size     `yaml:"max_header_size" default:"1MiB" doc:"The largest header section, of the message or of one MIME part, line ends included. A larger one gets 552 5.3.4 at the end of DATA. At least 64KiB."`
	MaxHeaderFields     int      `yaml:"max_header_fields" default:"10000" doc:"Header fields in the header of the message or of one MIME part; more get 552 5.3.4. At least 100."`
	MaxHeaderFieldSize  Size     `yaml:"max_header_field_length" default:"256KiB" doc:"The longest header field after unfolding (RFC 5322 section 2.2.3), name and value; a longer one gets 552 5.3.4. At least 1000."`
	MaxMIMEDepth        int      `yaml:"max_mime_depth" default:"100" doc:"How deeply multipart and message/rfc822 parts may nest; deeper gets 554 5.6.0. At least 10."`
	MaxMIMEParts        int      `yaml:"max_mime_parts" default:"10000" doc:"MIME parts in one message, nested ones included; more get 554 5.6.0. At least 100."`
	MaxErrors           int      `yaml:"max_errors" default:"10" doc:"Rejected commands (bad syntax, refused recipients, failed AUTH) tolerated in one connection before it is closed with 421."`
	ReadTimeout         Duration `yaml:"read_timeout" default:"5m" doc:"How long Sluice waits for the next command, or for more data inside DATA, before closing the connection with 421. RFC 5321 section 4.5.3.2 suggests 5 minutes."`
	WriteTimeout        Duration `yaml:"write_timeout" default:"1m" doc:"How long a reply may take to be written to the client."`
	MinDataRate         Size     `yaml:"min_data_rate" default:"1KiB" doc:"The average rate, in bytes a second, at which a message must arrive in DATA or BDAT once read_timeout has passed since the transfer began; a slower client gets 421 4.4.2 and is closed, so that one trickling a byte at a time cannot hold a connection for long. 0 turns it off (read_timeout alone then applies, restarted by every byte)."`
	MaxSessionTime      Duration `yaml:"max_session_time" default:"1h"  doc:"The longest an SMTP connection may last, however busy; then it gets 421 4.4.2 and is closed (a message being received is lost and the client sends it again). 0 means no limit."`
	TarpitAfter         int      `yaml:"tarpit_after" default:"5" doc:"Unknown recipients one client address (IPv6: its /64) may try within 15 minutes before each further one is answered only after a delay (tarpit_delay times the number beyond this, up to 30s), which makes guessing addresses slow. max_errors still closes each connection. 0 turns the tarpit off."`
	TarpitDelay         Duration `yaml:"tarpit_delay" default:"1s" doc:"The step of the delay tarpit_after describes."`
	MaxConnections      int      `yaml:"max_connections" default:"1000" doc:"Open SMTP connections across all listeners; more get 421 4.7.0 and are closed."`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip" default:"20" doc:"Open SMTP connections from one IP address (IPv6: one /64); more get 421 4.7.0 and are closed."`
	ShutdownGrace       Duration `yaml:"shutdown_grace" default:"30s" doc:"On shutdown, how long messages already in DATA may take to finish before their connections are closed. Idle connections get 421 at once."`
	RelayNetworks       []string `yaml:"relay_networks" doc:"Client address ranges (CIDR, such as 10.0.0.0/8) that may send mail to any domain on the MX listener without AUTH: printers, applications. Their mail goes through the outbound pipeline. Keep this list short."`
}

// Listener is one SMTP listener.
type Listener struct {
	Listen []string `yaml:"listen" doc:"Addresses to listen on, as host:port. Empty disables the listener."`
}

// Queue configures the SMTP-IN, local and remote queues.
type Queue struct {
	MinFreeDisk  Size     `yaml:"min_free_disk" default:"200MiB" doc:"When the data directory's file system has less free space than this, new mail gets 452 4.3.1 until space is freed."`
	LocalWorkers int      `yaml:"local_workers" default:"4" doc:"Concurrent local deliveries into mailboxes."`
	Immediate    bool     `yaml:"immediate_delivery" default:"true" doc:"Deliver mail for local users into their mailboxes before replying 250, so that it needs no queue record; what fails is queued. With false, all mail goes through the queue and the delivery workers, which is slower."`
	RetryAfter   Duration `yaml:"retry_after" default:"1m" doc:"How long a local delivery that failed temporarily waits before the next try; it doubles with each failure, up to an hour."`
	HoldAfter    int      `yaml:"hold_after" default:"5" doc:"A message whose local delivery fails this many times in a row is put on hold (see 'sluice queue ls') instead of being tried again."`
}

// Store configures mailboxes and accounts.
type Store struct {
	DefaultQuota       Size   `yaml:"default_quota" default:"1GiB" doc:"The mailbox quota of users created without one. 0 means no quota. Over quota, RCPT gets 452 4.2.2."`
	RecipientDelimiter string `yaml:"recipient_delimiter" default:"+" doc:"Sub-addressing: mail to user+tag@domain goes to user@domain. Empty turns sub-addressing off."`
}

// Auth configures authentication.
type Auth struct {
	MaxFailuresPerIP   int      `yaml:"max_failures_per_ip" default:"10" doc:"Failed logins from one IP address within failure_window, after which further attempts from that address are refused (454 4.7.0) until the window has passed."`
	MaxFailuresPerUser int      `yaml:"max_failures_per_user" default:"20" doc:"Failed logins for one account within failure_window, after which further attempts for that account are refused until the window has passed."`
	FailureWindow      Duration `yaml:"failure_window" default:"15m" doc:"The window over which failed logins are counted."`
	KnownClientWindow  Duration `yaml:"known_client_window" default:"30d" doc:"An address (IPv6: its /64) from which an account logged in successfully within this time is exempt from that account's max_failures_per_user, so that strangers guessing its password cannot lock its owner out; max_failures_per_ip still applies. 0 turns the exemption off."`
	MinPasswordLength  int      `yaml:"min_password_length" default:"10" doc:"The fewest characters (not bytes) a new password may have, wherever it is set: 'sluice user add', 'sluice user passwd' and the admin API behind them. New passwords are also refused when they are the user's address or its part before @ (ignoring case), or one of the most common passwords in the list shipped with Sluice. Existing passwords are not checked: their owners still log in. From 1 to 1024."`
	PlaintextLoopback  bool     `yaml:"plaintext_loopback" default:"false" doc:"Let IMAP and POP3 clients connecting from a loopback address (127.0.0.0/8, ::1) log in without TLS. Elsewhere passwords are only accepted over TLS (STARTTLS, STLS or the implicit-TLS ports)."`
}

// IMAP configures the IMAP listeners.
type IMAP struct {
	Listen              []string `yaml:"listen" doc:"Addresses for IMAP with STARTTLS (port 143), as host:port. Empty disables the listener."`
	ListenTLS           []string `yaml:"listen_tls" doc:"Addresses for IMAP over implicit TLS (port 993). Empty disables the listener."`
	MaxConnections      int      `yaml:"max_connections" default:"1000" doc:"Open IMAP connections across all listeners; more get BYE and are closed."`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip" default:"50" doc:"Open IMAP connections from one IP address (IPv6: one /64). Mail clients open several per account."`
}

// POP3 configures the POP3 listeners.
type POP3 struct {
	Listen              []string `yaml:"listen" doc:"Addresses for POP3 with STLS (port 110), as host:port. Empty disables the listener."`
	ListenTLS           []string `yaml:"listen_tls" doc:"Addresses for POP3 over implicit TLS (port 995). Empty disables the listener."`
	MaxConnections      int      `yaml:"max_connections" default:"1000" doc:"Open POP3 connections across all listeners; more get -ERR and are closed."`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip" default:"20" doc:"Open POP3 connections from one IP address (IPv6: one /64)."`
	ReadTimeout         Duration `yaml:"read_timeout" default:"10m" doc:"How long Sluice waits for the next command before closing the connection (RFC 1939 asks for at least 10 minutes)."`
}

// Web configures the web listener (core/webmail).
type Web struct {
	Listen              []string `yaml:"listen" doc:"Addresses for the web interface over HTTPS only (port 443), as host:port. Empty disables the listener. Needs TLS."`
	IdleTimeout         Duration `yaml:"idle_timeout" default:"30m" doc:"A web session not used for this long ends; the user logs in again."`
	MaxLifetime         Duration `yaml:"max_lifetime" default:"12h" doc:"A web session ends this long after its login, however busy it is."`
	MaxConnections      int      `yaml:"max_connections" default:"1000" doc:"Open HTTPS connections across all web listeners; more are closed at once."`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip" default:"50" doc:"Open HTTPS connections from one IP address (IPv6: one /64). A browser opens up to six per server, several users behind one NAT share an address."`
}

// Plugins configures where plugins are found.
type Plugins struct {
	Dir string `yaml:"dir" doc:"The directory of the built-in plugins. Empty means the plugins directory beside the sluice binary (bin/plugins in the source tree)."`
}

// Stage is one filter stage of a pipeline.
type Stage struct {
	Name    string         `yaml:"name" doc:"The stage's name in logs, message traces and quarantine listings; unique within its pipeline. Default: the plugin's name."`
	Plugin  string         `yaml:"plugin" doc:"A built-in plugin (clamav, spam, rspamd, spf, dkim, dmarc, dnsbl, senderpolicy, ratelimit, dkim-sign, example) or the path of a plugin program."`
	SHA256  string         `yaml:"sha256" doc:"When set, the plugin program must have this SHA-256 checksum (hex); it is checked each time the plugin starts."`
	Hooks   []verdict.Hook `yaml:"hooks" doc:"Which hooks run: connect (after HELO), mail, rcpt, data. Empty means every hook the plugin implements."`
	Timeout Duration       `yaml:"timeout" default:"30s" doc:"How long one check may take before it counts as a failure."`
	OnError OnError        `yaml:"on_error" default:"tempfail" doc:"What a failure of the plugin (a crash, a timeout, an error) does to the message: tempfail (4xx, the sender tries again later), accept (as if the stage had no objection) or reject (5xx)."`
	Config  RawConfig      `yaml:"config" doc:"The plugin's own settings, passed to it unchanged (see the plugin's documentation)."`
	Actions Actions        `yaml:"actions" doc:"What the stage's verdicts and score do."`

	MaxConcurrency int      `yaml:"max_concurrency" doc:"How many checks of this stage may run at once, across all sessions; the others wait for their turn, so that a busy scanner slows mail down instead of failing it. Set it to what the service behind the plugin can take at once (clamd's MaxThreads for clamav). 0 means no limit."`
	QueueTimeout   Duration `yaml:"queue_timeout" default:"2m" doc:"With max_concurrency: how long a check may wait for its turn before it counts as a failure (on_error). The stage's timeout starts when the check runs, after the wait."`
}

// OnError is what a failed check of a stage does to the message.
type OnError string

// The values of on_error.
const (
	OnErrorTempfail OnError = "tempfail" // 4xx: the sender tries again later
	OnErrorAccept   OnError = "accept"   // as if the stage had no objection
	OnErrorReject   OnError = "reject"   // 5xx
)

// OnErrors are the values on_error may take.
func OnErrors() []OnError { return []OnError{OnErrorTempfail, OnErrorAccept, OnErrorReject} }

// Action is the action a failed check gets: Continue for accept, Reject
// for reject, Tempfail otherwise (tempfail, the default).
func (o OnError) Action() verdict.Action {
	switch o {
	case OnErrorAccept:
		return verdict.Continue
	case OnErrorReject:
		return verdict.Reject
	}
	return verdict.Tempfail
}

// What actions.reject and actions.quarantine may map a stage's reject and
// quarantine verdicts to.
var (
	rejectMappings     = []verdict.Action{verdict.Reject, verdict.Tempfail, verdict.Quarantine, verdict.Junk, verdict.Continue}
	quarantineMappings = []verdict.Action{verdict.Quarantine, verdict.Junk, verdict.Reject, verdict.Continue}
)

// Map returns what the stage's actions make of a verdict's action: a
// reject or a quarantine as actions.reject or actions.quarantine say when
// they are set (Validate has checked them), any other action unchanged.
// The score thresholds are not applied here.
func (a Actions) Map(act verdict.Action) verdict.Action {
	var to string
	switch act {
	case verdict.Reject:
		to = a.Reject
	case verdict.Quarantine:
		to = a.Quarantine
	}
	if to == "" {
		return act
	}
	if m, err := verdict.ParseAction(to); err == nil {
		return m
	}
	return act
}

// Actions maps a stage's results to what happens to the message. Reject
// and Quarantine are action names (verdict.Action's text), empty when the
// verdict keeps its action: the zero Action, Continue, is itself a
// mapping they may give.
type Actions struct {
	Reject       string  `yaml:"reject" doc:"What a reject verdict of this stage does: reject, tempfail, quarantine, junk or continue. Empty means reject."`
	Quarantine   string  `yaml:"quarantine" doc:"What a quarantine verdict does: quarantine, junk, reject or continue. Empty means quarantine."`
	JunkAt       float64 `yaml:"junk_at" doc:"Deliver to the local recipients' Junk folder when the stage's score reaches this value; 0 turns it off."`
	QuarantineAt float64 `yaml:"quarantine_at" doc:"Quarantine the message when the stage's score reaches this value; 0 turns it off."`
	RejectAt     float64 `yaml:"reject_at" doc:"Reject the message when the stage's score reaches this value; 0 turns it off."`
}

// DNS configures lookups for delivery.
type DNS struct {
	Servers []string `yaml:"servers" doc:"DNS servers as host:port. Empty means the system resolver."`
	Timeout Duration `yaml:"timeout" default:"10s" doc:"How long one lookup may take; a timeout is a temporary failure."`
}

// Remote configures delivery to other servers.
type Remote struct {
	Port               int               `yaml:"port" default:"25" doc:"The port of MX hosts. Only tests change it."`
	AllowPrivate       bool              `yaml:"allow_private" default:"false" doc:"Deliver to MX hosts on loopback or private addresses. Off, such mail is bounced, since an MX record pointing there is a mistake or an attack; tests on 127.0.0.x turn it on. Routes may always use private addresses."`
	Workers            int               `yaml:"workers" default:"64" doc:"Deliveries in progress at once, across all destinations."`
	PerDestination     int               `yaml:"per_destination" default:"10" doc:"Connections at once to one destination (a domain's MX hosts, or a route)."`
	MessagesPerConn    int               `yaml:"messages_per_connection" default:"100" doc:"Messages sent over one connection before it is closed."`
	ConnectTimeout     Duration          `yaml:"connect_timeout" default:"30s" doc:"How long a connection attempt may take."`
	CommandTimeout     Duration          `yaml:"command_timeout" default:"5m" doc:"How long the other server may take to answer a command (RFC 5321 section 4.5.3.2)."`
	DataTimeout        Duration          `yaml:"data_timeout" default:"10m" doc:"How long the other server may take to answer the end of the message."`
	Retry              []Duration        `yaml:"retry" default:"[5m, 10m, 20m, 40m, 1h, 2h, 4h]" doc:"The waits between delivery attempts to one recipient; the last one repeats. Each wait varies by up to 10% so that retries spread out."`
	MaxAge             Duration          `yaml:"max_age" default:"5d" doc:"How long a message is retried before it is bounced to its sender."`
	DelayWarning       Duration          `yaml:"delay_warning" default:"0s" doc:"After this long undelivered, the sender is told once that the message is delayed (a DSN with Action: delayed). 0 turns it off."`
	TLS                map[string]string `yaml:"tls" doc:"TLS per recipient domain: opportunistic (the default: STARTTLS when offered, plain text otherwise), require (encrypted, certificate not checked) or verify (encrypted, and the certificate must be valid for the MX host name)."`
	TLSCAFile          string            `yaml:"tls_ca_file" doc:"A PEM file of CA certificates trusted (besides the system's) for verify."`
	MaxReturnedContent Size              `yaml:"max_returned_content" default:"64KiB" doc:"How much of a bounced message's header is returned in the bounce (the body never is)."`
}

// Route sends mail for some domains to a fixed next hop.
type Route struct {
	Domains      []string  `yaml:"domains" doc:"The recipient domains this route applies to; \"*\" matches every domain that is not local (a smarthost for outgoing mail). The listed domains are accepted on the MX listener, like local ones."`
	Host         string    `yaml:"host" doc:"The next hop's host name or address."`
	Port         int       `yaml:"port" default:"25" doc:"The next hop's port."`
	TLS          string    `yaml:"tls" default:"opportunistic" doc:"none, opportunistic, require, verify, or implicit (TLS from the first byte, as on port 465)."`
	Auth         RouteAuth `yaml:"auth" doc:"Credentials for the next hop, if it wants AUTH (only over TLS)."`
	Verify       string    `yaml:"verify" default:"none" doc:"How recipients of the route's domains are checked at RCPT: none (accept all), list (only those in users), or callout (ask the next hop with RCPT TO, and remember the answer for callout_cache)."`
	Users        []string  `yaml:"users" doc:"For verify: list, the valid addresses (a full address, or @domain for a whole domain)."`
	CalloutCache Duration  `yaml:"callout_cache" default:"1h" doc:"How long a callout's answer is remembered (refusals for a tenth of it)."`
}

// RouteAuth is a route's AUTH credentials.
type RouteAuth struct {
	Username     string `yaml:"username" doc:"The user name; empty means no AUTH."`
	PasswordFile string `yaml:"password_file" doc:"A file holding the password (its first line), so that the config file need not."`
}
