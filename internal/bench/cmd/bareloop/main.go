// Command bareloop is the reference agentrelay is measured against in
// `make bench`: the loop a user would write on nats.go alone, as issue 21
// describes it. jetstream's Consume with PullMaxMessages(n), an n-slot
// semaphore with a goroutine per message, an http.Client with n idle
// connections, a durable consumer with MaxAckPending 2n; POST with the
// bearer token and the message id as Idempotency-Key, ack on 2xx, nak
// otherwise. Nothing else: no metrics, no logs, no retries of its own, so
// that its binary, memory and CPU are what a bare loop costs.
//
// It runs until SIGTERM or SIGINT, then drains. It imports nothing from
// agentrelay, on purpose: its process must not carry agentrelay's code
// (the profiling build, -tags benchprof, adds package heapdump, which
// imports only the standard library).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	var (
		natsURL  = flag.String("nats", nats.DefaultURL, "NATS server URL")
		stream   = flag.String("stream", "BENCH", "stream")
		subject  = flag.String("subject", "bench.events", "filter subject")
		durable  = flag.String("durable", "bareloop", "durable consumer name")
		api      = flag.String("api", "http://127.0.0.1:8089", "API base URL")
		trigger  = flag.String("trigger", "agtch_bench", "trigger id")
		token    = flag.String("token", "tok-bench", "bearer token")
		inFlight = flag.Int("in-flight", 256, "messages in flight (the semaphore, PullMaxMessages, idle connections; MaxAckPending is twice it)")
	)
	flag.Parse()
	startProfiling()
	if err := run(*natsURL, *stream, *subject, *durable, *api+"/v1/workspace_agents/"+*trigger+"/trigger", "Bearer "+*token, *inFlight); err != nil {
		fmt.Fprintln(os.Stderr, "bareloop:", err)
		os.Exit(1)
	}
}

func run(natsURL, stream, subject, durable, url, auth string, n int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 2 * n,
		FilterSubject: subject,
	})
	if err != nil {
		return err
	}
	hc := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n},
	}
	sem := make(chan struct{}, n)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			handle(hc, url, auth, msg)
		}()
	}, jetstream.PullMaxMessages(n))
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	for range n { // wait for the calls in flight
		sem <- struct{}{}
	}
	return nil
}

func handle(hc *http.Client, url, auth string, msg jetstream.Msg) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(msg.Data()))
	if err != nil {
		_ = msg.Nak()
		return
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", msg.Headers().Get(jetstream.MsgIDHeader))
	resp, err := hc.Do(req)
	if err != nil {
		_ = msg.Nak()
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_ = msg.Ack()
	} else {
		_ = msg.Nak()
	}
}
