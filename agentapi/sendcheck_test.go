package agentapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

var errPinGone = errors.New("the pin may have lapsed")

// stallsOnceConnected is a call's context whose send check passes until
// the call has its connection, and then refuses: the caller's process
// stalled after its own check, and the pin it checked may have lapsed.
func stallsOnceConnected() context.Context {
	var stalled atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { stalled.Store(true) },
	})
	return agentapi.WithSendCheck(ctx, func() error {
		if stalled.Load() {
			return errPinGone
		}
		return nil
	})
}

// A call whose check passed when Trigger began, but whose process stalled
// after (here: once the call had its connection), is not written: the
// send check is asked at the write. Trigger says it was canceled, not a
// failure of the API's.
func TestASendCheckIsAskedAtTheWriteAndKeepsARefusedCallFromTheAPI(t *testing.T) {
	emu, a := emulated(t)
	ctx := stallsOnceConnected()
	status, err := a.Trigger(ctx, agentapi.Event{Input: "x", IdempotencyKey: "evt-1"})
	if status != 0 || agentapi.ClassOfError(err) != agentapi.ClassCanceled || !errors.Is(err, agentapi.ErrNotSent) || !errors.Is(err, errPinGone) {
		t.Fatalf("Trigger = %d, %v (class %s); want 0 and a canceled call wrapping ErrNotSent and the check's error", status, err, agentapi.ClassOfError(err))
	}
	if n := len(emu.Requests()); n != 0 {
		t.Fatalf("the API saw %d requests, want none", n)
	}
}

// A check that passes lets the call through, and is asked for it.
func TestASendCheckThatPassesLetsTheCallThrough(t *testing.T) {
	emu, a := emulated(t)
	var asked atomic.Int32
	ctx := agentapi.WithSendCheck(context.Background(), func() error { asked.Add(1); return nil })
	if status, err := a.Trigger(ctx, agentapi.Event{Input: "x", IdempotencyKey: "evt-1"}); status != http.StatusAccepted || err != nil {
		t.Fatalf("Trigger = %d, %v; want 202", status, err)
	}
	if asked.Load() == 0 || emu.Accepted(triggerID, "evt-1") != 1 {
		t.Fatalf("check asked %d times, accepted %d; want asked, accepted once", asked.Load(), emu.Accepted(triggerID, "evt-1"))
	}
}

// On a pool of kept-alive connections, a refused call is asked once and
// not retried on the next connection, and leaves its check behind on none:
// the calls after it go through.
func TestARefusedCallIsNotRetriedAndLeavesThePoolWorking(t *testing.T) {
	emu, a := emulated(t)
	var wg sync.WaitGroup
	for i := range 4 { // four connections in the pool
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "warm-" + string(rune('a'+i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var asked atomic.Int32
	refused := agentapi.WithSendCheck(context.Background(), func() error { asked.Add(1); return errPinGone })
	if _, err := a.Trigger(refused, agentapi.Event{Input: "x", IdempotencyKey: "evt-refused"}); !errors.Is(err, agentapi.ErrNotSent) {
		t.Fatalf("Trigger = %v, want ErrNotSent", err)
	}
	if asked.Load() != 1 {
		t.Errorf("a refused call was asked %d times, want once (no retry on another connection)", asked.Load())
	}
	for i := range 4 {
		if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "after-" + string(rune('a'+i))}); err != nil {
			t.Fatalf("a call after the refused one: %v", err)
		}
	}
	if emu.Accepted(triggerID, "evt-refused") != 0 || emu.LedgerLen() != 8 {
		t.Errorf("accepted the refused call %d times, %d accepted in all; want 0 and 8", emu.Accepted(triggerID, "evt-refused"), emu.LedgerLen())
	}
}

// Against an https API that speaks HTTP/2, calls with a send check go over
// HTTP/1.1 connections of their own, where the check is made at the write;
// the other calls keep HTTP/2.
func TestASendCheckHoldsAgainstAnHTTP2API(t *testing.T) {
	emu := emulator.New(emulator.WithToken(token, triggerID), emulator.WithTrigger(triggerID, true))
	srv := httptest.NewUnstartedServer(emu)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	a := agent(t, srv.URL, agentapi.StaticToken(agentapi.NewSecret(token)), agentapi.ClientOptions{TLS: &tls.Config{RootCAs: roots}})

	var proto string
	unchecked := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if tc, ok := info.Conn.(*tls.Conn); ok {
				proto = tc.ConnectionState().NegotiatedProtocol
			}
		},
	})
	if status, err := a.Trigger(unchecked, agentapi.Event{Input: "x", IdempotencyKey: "evt-h2"}); status != http.StatusAccepted || err != nil || proto != "h2" {
		t.Fatalf("a call without a check: %d, %v over %q; want 202 over h2", status, err, proto)
	}

	ctx := stallsOnceConnected()
	if _, err := a.Trigger(ctx, agentapi.Event{Input: "x", IdempotencyKey: "evt-stalled"}); !errors.Is(err, agentapi.ErrNotSent) {
		t.Fatalf("a call stalled after it had its connection: %v, want ErrNotSent", err)
	}
	checked := agentapi.WithSendCheck(context.Background(), func() error { return nil })
	if status, err := a.Trigger(checked, agentapi.Event{Input: "x", IdempotencyKey: "evt-checked"}); status != http.StatusAccepted || err != nil {
		t.Fatalf("a call whose check passes: %d, %v; want 202", status, err)
	}
	if emu.Accepted(triggerID, "evt-stalled") != 0 || emu.LedgerLen() != 2 {
		t.Errorf("accepted the stalled call %d times, %d in all; want 0 and 2", emu.Accepted(triggerID, "evt-stalled"), emu.LedgerLen())
	}
}
