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
// callCtx: the check is put on the connection the call gets, and taken off
// by the function it returns, when the call is over. A refusal cancels callCtx with ErrNotSent as
// its cause, so that the transport does not retry the call on another
// connection. It returns callCtx unchanged, and false, when ctx has no
// check.
func withSendCheck(ctx, callCtx context.Context) (context.Context, context.CancelFunc, bool) {
	check, _ := ctx.Value(sendCheckKey{}).(func() error)
	if check == nil {
		return callCtx, func() {}, false
	}
	callCtx, cancel := context.WithCancelCause(callCtx)
	refuse := func() error {
		err := check()
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrNotSent, err)
			cancel(err)
		}
		return err
	}
	var on atomic.Pointer[checkedConn]
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			c := checkedConnOf(info.Conn)
			if c == nil {
				return // a transport of the caller's: unchecked
			}
			c.check.Store(&refuse)
			on.Store(c)
		},
	}
	// The check stays on the connection until the call is over: the
	// transport writes the end of a request after its WroteRequest hook.
	// Another call that takes the connection before this one is over puts
	// its own check on it, or none: a call without a check that meets this
	// one's refusal was not written, and the transport sends it again on
	// another connection.
	stop := func() {
		if c := on.Swap(nil); c != nil {
			c.check.CompareAndSwap(&refuse, nil)
		}
		cancel(context.Canceled)
	}
	return httptrace.WithClientTrace(callCtx, trace), stop, true
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
	check atomic.Pointer[func() error]
}

func (c *checkedConn) Write(p []byte) (int, error) {
	if check := c.check.Load(); check != nil {
		if err := (*check)(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
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
