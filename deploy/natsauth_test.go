package deploy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/cli"
	"github.com/agentrelay/agentrelay/internal/natsconn"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

const natsPermissionsPath = "nats/auth/agentrelay-permissions.conf"

// natsUsers are the users of the permissions example, with the passwords
// the test gives them through the environment.
var natsUsers = map[string]string{
	"agentrelay": "AGENTRELAY_NATS_PASSWORD",
	"sre":        "AGENTRELAY_SRE_NATS_PASSWORD",
	"producer":   "AGENTRELAY_PRODUCER_NATS_PASSWORD",
	"nack":       "AGENTRELAY_NACK_NATS_PASSWORD",
}

// startPermissionsExample starts a nats-server with the example's accounts
// and permissions, JetStream on, on a random port, and returns its URL.
func startPermissionsExample(t *testing.T) string {
	t.Helper()
	for user, env := range natsUsers {
		t.Setenv(env, "pw-"+user)
	}
	opts, err := server.ProcessConfigFile(natsPermissionsPath)
	if err != nil {
		t.Fatalf("%s does not parse: %v", natsPermissionsPath, err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: %v", natsPermissionsPath, err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv.ClientURL()
}

// natsUser is a connection as one of the example's users.
type natsUser struct {
	name   string
	nc     *nats.Conn
	js     jetstream.JetStream
	denied chan string // the server's permission violations, as it words them
}

// inboxPrefixes are the example users' inbox prefixes: the worker's and the
// SRE commands' are built in, a producer sets its own; nack, which manages
// the streams, keeps nats.go's default.
var inboxPrefixes = map[string]string{
	"agentrelay": natsconn.WorkerInboxPrefix,
	"sre":        natsconn.SREInboxPrefix,
	"producer":   "_INBOX_producer",
	"nack":       "_INBOX",
}

func connectAs(t *testing.T, url, user string) *natsUser {
	t.Helper()
	u := &natsUser{name: user, denied: make(chan string, 64)}
	nc, err := nats.Connect(url, nats.UserInfo(user, "pw-"+user), nats.CustomInboxPrefix(inboxPrefixes[user]), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			u.denied <- err.Error()
		}
	}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	if u.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	u.nc = nc
	return u
}

// mayNotPublish publishes to subject and fails unless the server refuses
// it as a permissions violation.
func (u *natsUser) mayNotPublish(t *testing.T, subject string) {
	t.Helper()
	if err := u.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case msg := <-u.denied:
			if strings.Contains(msg, `"`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Errorf("%s may publish to %s", u.name, subject)
			return
		}
	}
}

// mayNotSubscribe subscribes to subject and fails unless the server refuses
// it as a permissions violation.
func (u *natsUser) mayNotSubscribe(t *testing.T, subject string) {
	t.Helper()
	sub, err := u.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case msg := <-u.denied:
			if strings.Contains(msg, "Subscription") && strings.Contains(msg, `"`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Errorf("%s may subscribe to %s", u.name, subject)
			return
		}
	}
}

// The permissions example is a working nats-server configuration, and its
// users can do what their job needs and no more: the worker relays and
// dead-letters, the SRE commands inspect, replay and purge, and neither
// they nor a producer can write a dead letter by hand (what `dlq replay`
// would act on) or purge or delete a stream.
func TestNATSPermissionsExample(t *testing.T) {
	d := renderExample(t)
	url := startPermissionsExample(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The streams and consumers as deploy/nats/cli defines them, by the
	// user that manages them (one server here: one replica).
	admin := connectAs(t, url, "nack").js
	n := loadNATSDefinitions(t)
	for _, s := range n.cliStreams {
		s.Replicas = 1
		if _, err := admin.CreateStream(ctx, s); err != nil {
			t.Fatalf("creating %s: %v", s.Name, err)
		}
	}
	for key, c := range n.cliConsumers {
		streamName, _, _ := strings.Cut(key, "/")
		if _, err := admin.CreateOrUpdateConsumer(ctx, streamName, c); err != nil {
			t.Fatalf("creating %s: %v", key, err)
		}
	}

	// The routes' agents: the first may be called, the second not yet.
	routes := d.config.Routes
	if len(routes) < 2 {
		t.Fatalf("the example has %d routes, the test needs 2", len(routes))
	}
	const apiToken = "tok-permissions-test"
	emu := emulator.New(emulator.WithToken(apiToken, routes[0].TriggerID),
		emulator.WithTrigger(routes[0].TriggerID, true), emulator.WithTrigger(routes[1].TriggerID, true))
	api, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", apiToken)

	// The worker, as the example configures it, connecting as agentrelay.
	wcfg := *d.config
	wcfg.NATS.URL, wcfg.NATS.User, wcfg.NATS.PasswordFile = url, "agentrelay", write("worker-pw", "pw-agentrelay")
	wcfg.API.BaseURL = api.URL
	wcfg.Metrics.Listen = "127.0.0.1:0"
	wcfg.Routes = append([]config.Route(nil), routes...)
	for i := range wcfg.Routes {
		wcfg.Routes[i].Token = config.Token{File: tokenFile}
	}
	var logs testenv.LogBuffer
	wctx, stop := context.WithCancel(ctx)
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- app.Run(wctx, &wcfg, slog.New(slog.NewJSONHandler(&logs, nil)), app.Options{Started: func(string) { close(started) }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the worker did not start with its permissions: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker did not start with its permissions:\n%s", logs.String())
	}

	// A producer publishes one event per route.
	producer := connectAs(t, url, "producer").js
	subject := func(r config.Route, leaf string) string {
		return strings.TrimSuffix(r.Subjects[0], ">") + leaf
	}
	for i, r := range routes[:2] {
		h := nats.Header{}
		h.Set("Nats-Msg-Id", fmt.Sprintf("perm-%d", i))
		if _, err := producer.PublishMsg(ctx, &nats.Msg{Subject: subject(r, "e"), Header: h, Data: []byte(`{"input":"x"}`)}); err != nil {
			t.Fatalf("producer publishing to %s: %v", r.Subjects[0], err)
		}
	}
	dlqName := appconfig.DeadLetter(d.config.DeadLetter).WithDefaults().Stream
	dlqCount := func() uint64 {
		s, err := admin.Stream(ctx, dlqName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	testenv.Eventually(t, 30*time.Second, "the first event accepted and the second dead-lettered", func() bool {
		return emu.Accepted(routes[0].TriggerID, "perm-0") == 1 && dlqCount() == 1
	})

	// Nobody but the worker writes a dead letter, and nobody here purges
	// or deletes a stream.
	workStream := routes[0].Stream
	dlSubject := appconfig.DeadLetter(d.config.DeadLetter).WithDefaults().Subject(subject(routes[0], "forged"))
	for _, user := range []string{"agentrelay", "sre", "producer"} {
		u := connectAs(t, url, user)
		if user != "agentrelay" {
			u.mayNotPublish(t, dlSubject)
		}
		for _, api := range []string{"$JS.API.STREAM.PURGE." + workStream, "$JS.API.STREAM.DELETE." + workStream,
			"$JS.API.STREAM.PURGE." + dlqName, "$JS.API.STREAM.DELETE." + dlqName, "$JS.API.STREAM.UPDATE." + workStream,
			"$JS.API.STREAM.CREATE.VICTIM", "$SYS.REQ.SERVER.PING"} {
			u.mayNotPublish(t, api)
		}
	}
	if dlqCount() != 1 {
		t.Fatalf("%d dead letters, want the worker's 1", dlqCount())
	}
	if _, err := admin.Stream(ctx, workStream); err != nil {
		t.Fatalf("stream %s: %v", workStream, err)
	}

	// The SRE commands, as the sre user: status, list, show, a dry run,
	// pause and resume, then the replay after the fix, and purge.
	var routesYAML strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&routesYAML, "  - {name: %s, stream: %s, subjects: [%q], trigger_id: %s, token: {file: %q}}\n", r.Name, r.Stream, r.Subjects[0], r.TriggerID, tokenFile)
	}
	sreConfig := write("sre.yaml", fmt.Sprintf("nats: {url: %q, user: sre, password_file: %q}\napi: {base_url: %q}\ndead_letter: {stream: %s}\nroutes:\n%s",
		url, write("sre-pw", "pw-sre"), api.URL, dlqName, routesYAML.String()))
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := cli.Main(ctx, app.Worker{}, append([]string{"--config", sreConfig}, args...), strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("agentrelay %s as sre: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		return out.String()
	}
	if out := run("status"); !strings.Contains(out, "forbidden=1") {
		t.Errorf("status:\n%s", out)
	}
	run("dlq", "list")
	run("dlq", "show", "1")
	if out := run("dlq", "replay", "--dry-run"); !strings.Contains(out, "1 would be replayed, 0 refused") {
		t.Errorf("dry run:\n%s", out)
	}
	run("pause", routes[1].Name, "--until", "1h")
	run("resume", routes[1].Name)
	emu.AddToken(apiToken, routes[1].TriggerID) // the fix
	if out := run("dlq", "replay"); !strings.Contains(out, "replayed 1 dead letter") {
		t.Errorf("replay:\n%s", out)
	}
	testenv.Eventually(t, 30*time.Second, "the replayed event accepted", func() bool { return emu.Accepted(routes[1].TriggerID, "perm-1") == 1 })
	if dlqCount() != 0 {
		t.Errorf("%d dead letters after the replay", dlqCount())
	}
	run("dlq", "purge", "--yes")
}

// inboxSpy records, as the stream manager (who may read everything), the
// messages that travel under each inbox prefix: where the worker's
// deliveries, the SRE's dead-letter reads and the status answers really go.
type inboxSpy struct {
	mu   sync.Mutex
	seen map[string][]string // prefix -> message bodies
}

func spyOnInboxes(t *testing.T, nc *nats.Conn, prefixes ...string) *inboxSpy {
	t.Helper()
	s := &inboxSpy{seen: map[string][]string{}}
	for _, p := range prefixes {
		sub, err := nc.Subscribe(p+".>", func(m *nats.Msg) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.seen[p] = append(s.seen[p], string(m.Data))
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// saw reports whether a message holding text travelled under prefix.
func (s *inboxSpy) saw(prefix, text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, body := range s.seen[prefix] {
		if strings.Contains(body, text) {
			return true
		}
	}
	return false
}

// With the example permissions, every role reads only its own replies. The
// worker's pull deliveries (the events), the SRE's dead-letter reads and the
// status service's answers travel on the worker's and the SRE's own inbox
// prefixes, which a producer may not subscribe to, nor to "_INBOX.>" or the
// status service's subjects; and only the worker may serve status. The
// worker relays, dead-letters and answers status, and the SRE commands read
// dead letters and status, all under these permissions.
func TestNATSPermissionsKeepEachRoleToItsOwnReplies(t *testing.T) {
	url := startPermissionsExample(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := connectAs(t, url, "nack")
	if _, err := admin.js.CreateStream(ctx, jetstream.StreamConfig{Name: "AGENT_EVENTS", Subjects: []string{"agents.>"}}); err != nil {
		t.Fatal(err)
	}
	spy := spyOnInboxes(t, admin.nc, "_INBOX", natsconn.WorkerInboxPrefix, natsconn.SREInboxPrefix, inboxPrefixes["producer"])

	const apiToken = "tok-inbox-test"
	emu := emulator.New(emulator.WithToken(apiToken, "agtch_plain", "agtch_ordered"),
		emulator.WithTrigger("agtch_plain", true), emulator.WithTrigger("agtch_ordered", true), emulator.WithTrigger("agtch_denied", true))
	api, err := emu.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	routes := fmt.Sprintf(`dead_letter: {stream: AGENTRELAY_DLQ}
routes:
  - {name: plain, stream: AGENT_EVENTS, subjects: ["agents.plain.>"], trigger_id: agtch_plain, token: {file: %[1]q}}
  - {name: ordered, stream: AGENT_EVENTS, subjects: ["agents.ordered.>"], trigger_id: agtch_ordered, ordering: conversation_key, token: {file: %[1]q}}
  - {name: denied, stream: AGENT_EVENTS, subjects: ["agents.denied.>"], trigger_id: agtch_denied, token: {file: %[1]q}}
`, write("token", apiToken))
	workerYAML := fmt.Sprintf("nats: {url: %q, user: agentrelay, password_file: %q}\napi: {base_url: %q}\nmetrics: {listen: \"127.0.0.1:0\"}\n%s",
		url, write("worker-pw", "pw-agentrelay"), api.URL, routes)
	wcfg, err := config.Parse([]byte(workerYAML))
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	wctx, stop := context.WithCancel(ctx)
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- app.Run(wctx, wcfg, slog.New(slog.NewJSONHandler(&logs, nil)), app.Options{Started: func(string) { close(started) }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the worker did not start with its permissions: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker did not start with its permissions:\n%s", logs.String())
	}

	// A producer publishes, with JetStream's ack on its own prefix.
	producer := connectAs(t, url, "producer")
	for subject, body := range map[string]string{
		"agents.plain.e":   `{"input":"BODY-OF-PLAIN"}`,
		"agents.ordered.e": `{"input":"BODY-OF-ORDERED","conversation_key":"KEY-OF-ORDERED"}`,
		"agents.denied.e":  `{"input":"BODY-OF-DENIED"}`,
	} {
		if _, err := producer.js.Publish(ctx, subject, []byte(body)); err != nil {
			t.Fatalf("producer publishing to %s: %v", subject, err)
		}
	}
	dlqCount := func() uint64 {
		s, err := admin.js.Stream(ctx, "AGENTRELAY_DLQ")
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0
		} else if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}
	testenv.Eventually(t, 30*time.Second, "two events accepted, one dead-lettered", func() bool {
		return emu.LedgerLen() == 2 && dlqCount() == 1
	})

	// The SRE commands: status asks the ordered route's owner, dlq show
	// reads the dead letter.
	sreConfig := write("sre.yaml", fmt.Sprintf("nats: {url: %q, user: sre, password_file: %q}\napi: {base_url: %q}\n%s",
		url, write("sre-pw", "pw-sre"), api.URL, routes))
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := cli.Main(ctx, app.Worker{}, append([]string{"--config", sreConfig}, args...), strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("agentrelay %s as sre: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
		return out.String()
	}
	if out := run("status", "--json"); !strings.Contains(out, `"owner_holds"`) {
		t.Errorf("status did not get the ordered route's owner's answer:\n%s", out)
	}
	if out := run("dlq", "show", "1"); !strings.Contains(out, "BODY-OF-DENIED") {
		t.Errorf("dlq show:\n%s", out)
	}

	// Where it all went: the events to the worker's inbox, the dead letter
	// and the status answer to the SRE's, nothing of it to "_INBOX".
	for _, w := range []struct{ prefix, text, what string }{
		{natsconn.WorkerInboxPrefix, "BODY-OF-PLAIN", "a pull delivery"},
		{natsconn.SREInboxPrefix, base64.StdEncoding.EncodeToString([]byte(`{"input":"BODY-OF-DENIED"}`)), "a dead letter read"}, // a message get answers in JSON, base64
		{natsconn.SREInboxPrefix, `"pin_id"`, "a status answer"},
	} {
		testenv.Eventually(t, 10*time.Second, w.what+" on "+w.prefix, func() bool { return spy.saw(w.prefix, w.text) })
	}
	for _, text := range []string{"BODY-OF", "KEY-OF-ORDERED", `"pin_id"`} {
		if spy.saw("_INBOX", text) {
			t.Errorf("%s travelled on _INBOX", text)
		}
	}

	// And no role may listen where it does not belong.
	statusSubjects := []string{"agentrelay.ordered.>", "agentrelay.status.>", "$SRV.>"}
	for user, forbidden := range map[string][]string{
		"producer":   append([]string{">", "_INBOX.>", natsconn.WorkerInboxPrefix + ".>", natsconn.SREInboxPrefix + ".>", "agentrelay.dlq.>", "agents.>", "$JS.API.>"}, statusSubjects...),
		"sre":        append([]string{"_INBOX.>", natsconn.WorkerInboxPrefix + ".>", inboxPrefixes["producer"] + ".>"}, statusSubjects...),
		"agentrelay": {"_INBOX.>", natsconn.SREInboxPrefix + ".>", inboxPrefixes["producer"] + ".>"},
	} {
		u := connectAs(t, url, user)
		for _, subject := range forbidden {
			u.mayNotSubscribe(t, subject)
		}
	}
	// Nor ask the status service, nor answer in the worker's name.
	p := connectAs(t, url, "producer")
	for _, subject := range []string{"agentrelay.ordered.AGENT_EVENTS.agentrelay-ordered", "agentrelay.status.x", "$SRV.PING", natsconn.SREInboxPrefix + ".forged"} {
		p.mayNotPublish(t, subject)
	}

	// The worker itself did everything it does with its own permissions:
	// pulled, acked, watched the pause advisories and the dead-letter
	// stream; paused and resumed a route for route health (a probe the API
	// refuses with 409 stops the ordered route, a probe that gets through
	// resumes it).
	emu.SetRunnable("agtch_ordered", false)
	if _, err := producer.js.Publish(ctx, "agents.ordered.e", []byte(`{"input":"BODY-OF-ORDERED-2","conversation_key":"KEY-OF-ORDERED"}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "the route paused for route health", func() bool {
		c, err := admin.js.Consumer(ctx, "AGENT_EVENTS", "agentrelay-ordered")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.Paused
	})
	emu.SetRunnable("agtch_ordered", true)
	testenv.Eventually(t, 15*time.Second, "resumed and accepted", func() bool { return emu.LedgerLen() == 3 })
	if strings.Contains(logs.String(), "ermissions Violation") {
		t.Errorf("the worker met a permission it lacks:\n%s", logs.String())
	}
}
