package emulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server is an Emulator serving HTTP/1.1 on a real socket. Create it with
// Emulator.Listen.
type Server struct {
	// URL is the base URL of the API, e.g. "http://127.0.0.1:41234". Clients
	// append /v1/workspace_agents/{id}/trigger to it.
	URL string
	// Addr is the address the server listens on, host:port.
	Addr string

	srv *http.Server
	// cancel ends the base context of every request. Hangs and latency
	// delays therefore end when the server closes, and no handler goroutine
	// outlives the server.
	cancel context.CancelFunc
	served chan struct{} // closed when Serve has returned
	err    error         // Serve's error, unless it is http.ErrServerClosed; read after served
}

// Listen serves e on addr, e.g. "127.0.0.1:0" for a free loopback port. It
// serves HTTP/1.1 only: no TLS, no h2c. Hijacking, which the hang and drop
// faults need, is HTTP/1.1-only. The caller must Close or Shutdown the
// returned Server.
func (e *Emulator) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("emulator: listen on %q: %w", addr, err)
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		URL:    "http://" + ln.Addr().String(),
		Addr:   ln.Addr().String(),
		cancel: cancel,
		served: make(chan struct{}),
	}
	s.srv = &http.Server{
		Handler: e,
		// Guards against clients that open a connection and never finish
		// the headers. Hangs are the emulator's own business, not the
		// client's.
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	if e.logger != nil {
		s.srv.ErrorLog = slog.NewLogLogger(e.logger.Handler(), slog.LevelWarn)
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Close stops the server at once. It closes the listener and every
// connection, and ends hanging and delayed requests without a response. It
// returns when the accept loop has stopped, which is prompt even with hangs
// in flight. Calling Close more than once is safe.
func (s *Server) Close() error {
	s.cancel()
	err := s.srv.Close()
	<-s.served
	return errors.Join(err, s.err)
}

// Shutdown stops the server gracefully. It stops accepting connections and
// waits for requests in flight to be answered. That includes hangs, which
// are in flight until they end. If ctx ends first, Shutdown falls back to
// Close and returns ctx's error. Either way no connection stays open, and
// every waiting handler is released.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.cancel()
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.served
	return errors.Join(err, s.err)
}
