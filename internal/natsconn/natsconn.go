// Package natsconn opens the NATS connection agentrelay's commands share:
// the worker and every SRE subcommand connect with the same options
// (servers, authentication, TLS) from the same configuration section.
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/backoff"
	"github.com/agentrelay/agentrelay/internal/redact"
)

// ErrClosed is what Hooks.Closed reports: nats.go closed the connection
// and will not reconnect it. After a server's "-ERR 'maximum control line
// exceeded'", repeated authorization errors or (were they finite) exhausted
// reconnect attempts, the connection is dead for good; a worker that stays
// up with it relays nothing.
var ErrClosed = errors.New("NATS connection closed for good")

// The inbox prefixes of agentrelay's two roles. Replies come to a
// connection on its inbox subjects: the worker's pull deliveries (event
// bodies), JetStream API answers, and the SRE commands' dead-letter reads
// and status answers. With nats.go's shared default "_INBOX." anyone
// allowed to subscribe to "_INBOX.>" reads them all; with a prefix per
// role, the NATS permissions (deploy/nats/auth) let each role subscribe to
// its own replies only. Producers keep their own prefix (or the default).
const (
	// WorkerInboxPrefix is the worker's: Connect's default.
	WorkerInboxPrefix = "_INBOX_agentrelay_worker"
	// SREInboxPrefix is the SRE commands' (status, dlq, pause, resume,
	// publish): they connect with nats.CustomInboxPrefix(SREInboxPrefix).
	SREInboxPrefix = "_INBOX_agentrelay_sre"
)

// Hooks observe the connection's life; all are optional.
type Hooks struct {
	Connected    func(up bool)
	Reconnected  func()
	ErrorHandled func(err error)
	// Closed is called once when the connection is closed, whoever closed
	// it, with an error wrapping ErrClosed and naming the cause: the
	// connection's last error (URLs in it without their user info), or
	// that none was recorded (Close or Drain). Only the owner of the
	// connection knows whether it asked for the close.
	Closed func(err error)
}

// Options builds nats.go options from the configuration. Reconnection never
// gives up: a worker that stops trying after a broker outage needs a human to
// restart it, which is what this is meant to avoid. Inboxes get the worker's
// prefix, WorkerInboxPrefix.
func Options(c config.NATS, log *slog.Logger, h Hooks) ([]nats.Option, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.CustomInboxPrefix(WorkerInboxPrefix),
		nats.Timeout(c.ConnectTimeout.D()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(c.ReconnectWait.D()),
		nats.ReconnectJitter(c.ReconnectWait.D()/2, c.ReconnectWait.D()),
		nats.RetryOnFailedConnect(false),
		// Keep publishing (acks, naks, dead letters) into a buffer across
		// a short disconnect; they are sent on reconnect.
		nats.ReconnectBufSize(8 << 20),
	}
	opts = append(opts, lifecycleHandlers(log, h)...)
	auth, err := authOption(c)
	if err != nil {
		return nil, err
	}
	if auth != nil {
		opts = append(opts, auth)
	}
	if c.TLS.Enabled() {
		tc, err := TLSConfig(c.TLS, log, "nats")
		if err != nil {
			return nil, fmt.Errorf("nats.tls: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// lifecycleHandlers log the connection's disconnects, reconnects, close,
// asynchronous errors and lame-duck notices, and pass them on to h.
func lifecycleHandlers(log *slog.Logger, h Hooks) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			} else {
				log.Info("disconnected from NATS")
			}
			if h.Connected != nil {
				h.Connected(false)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted(), "server_id", nc.ConnectedServerId())
			if h.Connected != nil {
				h.Connected(true)
			}
			if h.Reconnected != nil {
				h.Reconnected()
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			err := closedError(nc.LastError())
			log.Info("NATS connection closed", "cause", err)
			if h.Connected != nil {
				h.Connected(false)
			}
			if h.Closed != nil {
				h.Closed(err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("NATS error", "err", err, "subscription", subj)
			if h.ErrorHandled != nil {
				h.ErrorHandled(err)
			}
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Info("NATS server entering lame duck mode; will move to another server", "server", nc.ConnectedUrlRedacted())
		}),
	}
}

// authOption is the option of the configured authentication (the first of
// credentials file, nkey seed, user and password, token), or nil for none.
// An error names the configuration key whose file cannot be used.
func authOption(c config.NATS) (nats.Option, error) {
	switch {
	case c.CredentialsFile != "":
		return nats.UserCredentials(c.CredentialsFile), nil
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		return o, nil
	case c.User != "":
		pw, err := readSecretFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("nats.password_file: %w", err)
		}
		return nats.UserInfo(c.User, pw), nil
	case c.TokenFile != "":
		tok, err := readSecretFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("nats.token_file: %w", err)
		}
		return nats.Token(tok), nil
	}
	return nil, nil
}

// Connect connects to the configured servers, retrying the first connection
// until ctx ends (NATS may start after us in a Kubernetes rollout). The
// extra options are applied after Options' and so override them: the SRE
// commands pass nats.CustomInboxPrefix(SREInboxPrefix).
func Connect(ctx context.Context, c config.NATS, log *slog.Logger, h Hooks, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := Options(c, log, h)
	if err != nil {
		return nil, err
	}
	opts = append(opts, extra...)
	var nc *nats.Conn
	// NATS may take a while to start: every 250ms at first, then every 5s.
	err = backoff.Retry(ctx, backoff.Policy{Min: 250 * time.Millisecond, Max: 5 * time.Second}, func(context.Context) (err error) {
		nc, err = nats.Connect(c.URL, opts...)
		return err
	}, func(err error, wait time.Duration) bool {
		if refused(err) {
			return false
		}
		if log != nil {
			log.Warn("cannot connect to NATS yet; retrying", "servers", redactURLs(c.URL), "err", err, "retry_in", wait)
		}
		return true
	})
	switch {
	case err == nil:
	case refused(err):
		return nil, fmt.Errorf("connecting to NATS: %w", err)
	default:
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURLs(c.URL), err)
	}
	if log != nil {
		log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted(), "server_version", nc.ConnectedServerVersion())
	}
	if h.Connected != nil {
		h.Connected(true)
	}
	return nc, nil
}

// refused reports whether the server refused the credentials: retrying
// would not help.
func refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked)
}

// TLSConfig builds a client TLS configuration. Verification stays on
// unless insecure_skip_verify is set, and then it is logged loudly every
// time, so that it cannot be left on by accident unnoticed.
func TLSConfig(t config.TLS, log *slog.Logger, what string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.InsecureSkipVerify {
		if log != nil {
			log.Warn("TLS certificate verification is OFF (insecure_skip_verify): connections can be intercepted; never use this in production", "connection", what)
		}
		tc.InsecureSkipVerify = true
	}
	return tc, nil
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// closedError is what Hooks.Closed reports for a connection whose last
// error was last (nil when the application closed it without one).
func closedError(last error) error {
	if last == nil {
		return fmt.Errorf("%w: no error recorded (Close or Drain)", ErrClosed)
	}
	return fmt.Errorf("%w: %s", ErrClosed, redact.URLs(last.Error()))
}

// redactURLs hides user info (and queries) in a comma-separated server
// list; redact.URLs is the one place that knows how.
func redactURLs(s string) string { return redact.URLs(s) }
