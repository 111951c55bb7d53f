// Package natsembed runs nats-server with JetStream inside the current
// process.
//
// It serves two kinds of callers: the `agentrelay dev` command, which runs
// one server with a file store under a data folder until it is interrupted,
// and tests or fault-injection suites, which need random ports, temporary
// store directories, restarts on the same port and store directory, abrupt
// stops, and small clusters with replicated streams.
//
// A *server.Server cannot be started again after it has been shut down, so
// Server.Restart builds a new one on the same client port (and cluster port)
// and the same store directory; JetStream state (streams, messages, durable
// consumers and their ack floors) is recovered from disk. Clients that
// connect with ClientURL (or Cluster.ClientURLs) and unlimited reconnects
// find the new server on their own.
//
// The package has no global state: every Server owns its options, logger
// and ports.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// readyTimeout bounds how long Start and Restart wait for the server to
	// accept connections with JetStream enabled.
	readyTimeout = 10 * time.Second
	// listenAttempts is how often a start is tried when a listen address is
	// already in use.
	listenAttempts = 4
)

// Options configures a single embedded server.
type Options struct {
	// Host is the interface to listen on; default 127.0.0.1.
	Host string
	// Port is the client port. 0 picks a random free port; the port is then
	// pinned after the first successful start, so Restart reuses it.
	Port int
	// StoreDir is the JetStream file store directory. Required.
	StoreDir string
	// ServerName is the server's name; default is a name derived from the
	// server ID (single server) or "n<i>" (cluster node).
	ServerName string
	// SyncAlways makes JetStream fsync after every write (the
	// `jetstream { sync_interval: always }` setting) instead of every two
	// minutes.
	SyncAlways bool
	// Logger, when set, receives the server's own log lines: notices at
	// Info, warnings at Warn, errors and fatal errors at Error, debug lines
	// at Debug and protocol traces at LevelTrace (debug and trace logging
	// are switched on only if the logger is enabled at those levels). When
	// nil, the server logs nothing.
	Logger *slog.Logger
	// MaxPayload is the maximum message payload in bytes; 0 keeps the
	// server default (1 MiB).
	MaxPayload int32
	// MaxControlLine is the longest protocol line (such as a PUB with its
	// subject and reply) the server accepts; a client that sends a longer
	// one gets "-ERR 'maximum control line exceeded'" and is disconnected
	// for good. 0 keeps the server default (4096 bytes).
	MaxControlLine int32
}

// clusterConfig holds the route settings of a cluster node. The ports are
// fixed before the first start because the other nodes' routes point at them.
type clusterConfig struct {
	name   string
	port   int
	routes []string // nats-route URLs of all nodes, including this one
}

// Server is an embedded nats-server with JetStream. Its methods are safe
// for concurrent use.
type Server struct {
	opts    Options        // as given, Host defaulted; opts.Port may be 0; MaxControlLine changes under opMu
	cluster *clusterConfig // nil for a standalone server

	// opMu serialises the lifecycle operations Start, Shutdown, Kill and
	// Restart; mu guards port and ns and is held only briefly.
	opMu    sync.Mutex
	started bool // guarded by opMu: an instance has been started before
	mu      sync.Mutex
	port    int // client port, pinned after the first successful start
	ns      *server.Server
}

// Start starts a server and waits until it accepts client connections with
// JetStream enabled (at most 10 s). If a random port turns out to be taken
// between picking and listening, Start retries with another one.
func Start(opts Options) (*Server, error) {
	s, err := newServer(opts, nil)
	if err != nil {
		return nil, err
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func newServer(opts Options, cc *clusterConfig) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("natsembed: Options.StoreDir is required")
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("natsembed: invalid port %d", opts.Port)
	}
	if opts.MaxPayload < 0 {
		return nil, fmt.Errorf("natsembed: invalid MaxPayload %d", opts.MaxPayload)
	}
	if opts.MaxControlLine < 0 {
		return nil, fmt.Errorf("natsembed: invalid MaxControlLine %d", opts.MaxControlLine)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	return &Server{opts: opts, cluster: cc, port: opts.Port}, nil
}

// start launches a new server instance. The caller holds opMu and no
// instance is running.
//
// If the listen address is in use: a random port is replaced by another
// random port; a port pinned by an earlier start (Restart) is retried after a
// short pause, since the old listener may just be going away; an explicitly
// configured port on the first start fails at once.
func (s *Server) start() error {
	s.mu.Lock()
	pinned := s.port
	s.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt < listenAttempts; attempt++ {
		port := pinned
		if port == 0 {
			p, err := freePort(s.opts.Host)
			if err != nil {
				return err
			}
			port = p
		} else if attempt > 0 {
			if !s.started {
				break
			}
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		ns, err := s.launch(port)
		if err == nil {
			s.started = true
			s.mu.Lock()
			s.port, s.ns = port, ns
			s.mu.Unlock()
			return nil
		}
		lastErr = err
		if !isAddrInUse(err) {
			break
		}
	}
	return lastErr
}

// launch creates and starts one server instance on the given client port and
// waits until it is ready. On failure the instance is shut down.
func (s *Server) launch(port int) (*server.Server, error) {
	ns, err := server.NewServer(s.serverOptions(port))
	if err != nil {
		return nil, fmt.Errorf("natsembed: new server: %w", err)
	}
	name := s.opts.ServerName
	if name == "" {
		name = ns.Name()
	}
	lg := newServerLogger(s.opts.Logger, name)
	debug, trace := lg.levels()
	ns.SetLoggerV2(lg, debug, trace, false)

	go ns.Start()

	deadline := time.Now().Add(readyTimeout)
	for {
		if ferr := lg.fatalErr(); ferr != nil {
			stop(ns)
			return nil, ferr
		}
		if ns.ReadyForConnections(50*time.Millisecond) && ns.JetStreamEnabled() {
			return ns, nil
		}
		if time.Now().After(deadline) {
			stop(ns)
			return nil, fmt.Errorf("natsembed: server on port %d not ready with JetStream after %s", port, readyTimeout)
		}
	}
}

// serverOptions are the nats-server options of an instance on port.
func (s *Server) serverOptions(port int) *server.Options {
	sopts := &server.Options{
		ServerName:     s.opts.ServerName,
		Host:           s.opts.Host,
		Port:           port,
		JetStream:      true,
		StoreDir:       s.opts.StoreDir,
		SyncAlways:     s.opts.SyncAlways,
		MaxPayload:     s.opts.MaxPayload,
		MaxControlLine: s.opts.MaxControlLine,
		NoLog:          true, // replaced by SetLoggerV2 in launch
		NoSigs:         true,
	}
	if cc := s.cluster; cc != nil {
		sopts.Cluster = server.ClusterOpts{Name: cc.name, Host: s.opts.Host, Port: cc.port}
		sopts.Routes = server.RoutesFromStr(strings.Join(cc.routes, ","))
	}
	return sopts
}

// SetMaxControlLine changes MaxControlLine for the next Restart. (A
// configuration reload would change it for connected clients too, but
// nats-server reads the limit without synchronisation while parsing, which
// the race detector reports.) After the restart, a client whose protocol
// line is longer is disconnected for good: that is how a test makes the
// server end a connection that the client will not reconnect.
func (s *Server) SetMaxControlLine(n int32) error {
	if n < 0 {
		return fmt.Errorf("natsembed: invalid MaxControlLine %d", n)
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.opts.MaxControlLine = n
	return nil
}

// stop shuts a server instance down and waits until it is gone.
func stop(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// ClientURL returns the URL clients connect to, e.g. nats://127.0.0.1:4222.
// It stays the same across Restart. A wildcard Host is reported as the
// loopback address.
func (s *Server) ClientURL() string {
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	return dialURL("nats", s.opts.Host, port)
}

// Running reports whether the current server instance is running.
func (s *Server) Running() bool {
	ns := s.NATS()
	return ns != nil && ns.Running()
}

// NATS returns the current *server.Server instance (a new one after each
// Restart), for whatever this package does not wrap. It is nil before the
// first successful start.
func (s *Server) NATS() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// Shutdown stops the server gracefully and waits until it has stopped:
// pending pull requests of R1 consumers get a "409 Server Shutdown" status,
// raft leaders hand leadership over, stores are flushed and closed, and
// client connections are closed. It is idempotent.
func (s *Server) Shutdown() {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if ns := s.NATS(); ns != nil {
		stop(ns)
	}
}

// Kill stops the server as abruptly as an in-process server allows and waits
// until it has stopped. It first drops every client connection without
// notice (clients see a plain connection loss; pending pull requests get no
// "409 Server Shutdown" status) and then shuts the server down without lame
// duck mode.
//
// Limits: this is not a process crash. The nats-server shutdown path still
// steps down raft leaders (so a killed stream leader hands over to a
// follower within milliseconds instead of the followers waiting for an
// election timeout), flushes and closes the file store, and closes route
// connections. Simulating a crash with unsynced writes or a silent network
// partition needs a separate process or a proxy.
func (s *Server) Kill() {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	ns := s.NATS()
	if ns == nil {
		return
	}
	if ns.Running() {
		if cz, err := ns.Connz(&server.ConnzOptions{Limit: 1 << 20}); err == nil {
			for _, c := range cz.Conns {
				_ = ns.DisconnectClientByID(c.Cid) // it may be gone already
			}
		}
	}
	stop(ns)
}

// Restart stops the server (gracefully, if it is running) and starts a new
// server instance on the same client port, cluster port and store
// directory. JetStream state is recovered from the store.
func (s *Server) Restart() error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if ns := s.NATS(); ns != nil {
		stop(ns)
	}
	return s.start()
}

// freePort returns a TCP port on host that was free a moment ago.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("natsembed: pick a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("natsembed: pick a free port: %w", err)
	}
	return port, nil
}

// dialURL builds a URL for a listen address; a wildcard host is replaced by
// the loopback address so that the URL is dialable.
func dialURL(scheme, host string, port int) string {
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}
