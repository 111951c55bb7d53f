package agentapi

import (
	"bytes"
	"context"
	"net/http"
)

// TriggerViaClientDo is Trigger as the standard library would have it,
// for BenchmarkTrigger's comparison (issue #13: does the http.Client bypass
// earn its place?): a request built by http.NewRequestWithContext on every
// call, headers set on it, sent with http.Client.Do (whose CheckRedirect
// refuses redirects). The answer is handled as Trigger handles it.
func (a *Agent) TriggerViaClientDo(ctx context.Context, ev Event, templated bool) (int, error) {
	body, tok, err := a.prepare(ev)
	if err != nil {
		return 0, err
	}
	callCtx, cancel := context.WithTimeout(ctx, a.c.timeout)
	defer cancel()
	var req *http.Request
	if templated {
		req = a.newRequest(callCtx, body)
		a.setHeaders(ctx, req.Header, tok, ev.IdempotencyKey)
	} else {
		req, err = http.NewRequestWithContext(callCtx, http.MethodPost, a.url, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		h := req.Header
		h.Set("Authorization", "Bearer "+tok.Reveal())
		h.Set("Content-Type", "application/json")
		h.Set("Accept", "application/json")
		h.Set("User-Agent", a.c.userAgent[0])
		if ev.IdempotencyKey != "" {
			h[idempotencyKeyField] = []string{ev.IdempotencyKey}
		}
		injectTraceContext(ctx, h)
	}
	resp, err := a.c.hc.Do(req)
	if err != nil {
		return 0, &Error{TriggerID: a.id, Class: transportClass(ctx, callCtx), Err: safeError(scrubURLError(err), tok)}
	}
	stop := context.AfterFunc(callCtx, func() { _ = resp.Body.Close() })
	defer stop()
	return resp.StatusCode, a.finish(resp, tok)
}
