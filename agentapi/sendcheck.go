package agentapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// ErrNotSent says that a call's send check refused it (see WithSendCheck):
// the request was not written, or not all of it, so the API never took it.
var ErrNotSent = errors.New("agentapi: the call was not sent: its send check refused it")

type sendCheckKey struct{}

// WithSendCheck returns a copy of ctx under which Agent.Trigger asks check,
// on the goroutine that writes the request and just before each write of
// its bytes to the connection, whether the call may still go out. A check
// that returns an error stops the call: Trigger returns an *Error of
// ClassCanceled that wraps ErrNotSent and the check's error.
//
// A check made before Trigger is not enough when the call must not reach
// the API after some deadline (an ordered route's owner whose pin may
// lapse): a process stopped between that check and the write (SIGSTOP, a
// frozen VM) writes the call when it runs again, however late. Checked at
// the write, the window shrinks to the few instructions between the check
// and the system call.
//
// An HTTP/2 connection carries the bytes of every call in flight at once,
// which cannot be told apart by call; so calls with a check go over
// HTTP/1.1, on connections of their own when the base URL is https. A
// Client built with ClientOptions.Transport makes no check at the write:
// the caller's own check before Trigger is all there is.
func WithSendCheck(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, sendCheckKey{}, check)
}

// withSendCheck arms ctx's send check, if it has one, for a call under
// callCtx: the check is put on the connection the call gets, as a
// sendGuard, until the request is written. A refusal cancels callCtx with
// ErrNotSent as its cause, so that the transport does not retry the call
// on another connection. It returns callCtx unchanged, and false, when ctx
// has no check; else the context to call under and the function to call
// when the call is over.
func withSendCheck(ctx, callCtx context.Context) (context.Context, context.CancelFunc, bool) {
	check, _ := ctx.Value(sendCheckKey{}).(func() error)
	if check == nil {
		return callCtx, func() {}, false
	}
	callCtx, cancel := context.WithCancelCause(callCtx)
	g := &sendGuard{check: func() error {
		err := check()
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrNotSent, err)
			cancel(err)
		}
		return err
	}}
	var on atomic.Pointer[checkedConn]
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if c := checkedConnOf(info.Conn); c != nil { // else a transport of the caller's: unchecked
				c.guard.Store(g)
				on.Store(c)
			}
		},
		// The transport calls this before it flushes the request's last
		// bytes: the guard checks that write too, then comes off.
		WroteRequest: func(httptrace.WroteRequestInfo) { g.last.Store(true) },
		// An answer has begun: the request was written.
		GotFirstResponseByte: func() { g.off(on.Load()) },
	}
	stop := func() {
		g.off(on.Swap(nil))
		cancel(context.Canceled)
	}
	return httptrace.WithClientTrace(callCtx, trace), stop, true
}

// sendGuard is one call's send check, on the connection its request is
// written on. It comes off with the write after WroteRequest, or when an
// answer begins, or when the call is over: a refusal says the request was
// not written whole, and a write once it was (TLS answering the server
// after a stall) is not the call's. A call without a check that takes the
// connection while a guard is still on it (between the call's answer and
// its end) and meets its refusal was not written either: the transport
// sends it again on another connection.
type sendGuard struct {
	check func() error
	last  atomic.Bool // the transport is flushing the request's last bytes
}

// off takes g off c, if it is still on it.
func (g *sendGuard) off(c *checkedConn) {
	if c != nil {
		c.guard.CompareAndSwap(g, nil)
	}
}

// checkedConnOf is the checkedConn under an HTTP/1.1 connection, or nil.
func checkedConnOf(c net.Conn) *checkedConn {
	if tc, ok := c.(*tls.Conn); ok {
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return nil // never on rtChecked; a guard all the same
		}
		c = tc.NetConn()
	}
	cc, _ := c.(*checkedConn)
	return cc
}

// checkedConn is a connection of the Client's own transport. While a call
// with a send check is written on it, every write asks the check first.
type checkedConn struct {
	net.Conn
	guard atomic.Pointer[sendGuard]
}

func (c *checkedConn) Write(p []byte) (int, error) {
	g := c.guard.Load()
	if g == nil {
		return c.Conn.Write(p)
	}
	if err := g.check(); err != nil {
		return 0, err
	}
	last := g.last.Load()
	n, err := c.Conn.Write(p)
	if last {
		g.off(c)
	}
	return n, err
}

// newHTTP1Transport is newTransport without HTTP/2: the transport of the
// calls with a send check to an https API.
func newHTTP1Transport(o ClientOptions) *http.Transport {
	t := newTransport(o)
	// Its own copy, without ALPN: the HTTP/2 transport adds "h2" to the
	// NextProtos of the config it is given, which may be this one.
	t.TLSClientConfig = t.TLSClientConfig.Clone()
	t.TLSClientConfig.NextProtos = nil
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // non-nil and empty: no HTTP/2
	return t
}

// dialChecked wraps dial's connections so that a send check can be put on
// them.
func dialChecked(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &checkedConn{Conn: c}, nil
	}
}
