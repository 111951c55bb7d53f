package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/deploy/internal/kube"
	"github.com/agentrelay/agentrelay/deploy/internal/strict"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/appconfig"
	"github.com/agentrelay/agentrelay/internal/subject"
)

// natsDefinitions are the NATS-side resources in deploy/nats: the NACK
// resources (as kustomize renders them) and the nats CLI JSON files, both
// translated to the JetStream configuration they ask the server for.
type natsDefinitions struct {
	nackStreams   map[string]jetstream.StreamConfig   // by stream name
	nackConsumers map[string]jetstream.ConsumerConfig // by stream/durable
	cliStreams    map[string]jetstream.StreamConfig   // by stream name
	cliConsumers  map[string]jetstream.ConsumerConfig // by stream/durable
	cliFiles      map[string]string                   // key above → file
	// singleNodeStreams are nats/cli/single-node: the streams for a single
	// server (one replica), by name; their files are in cliFiles under
	// "single-node/NAME".
	singleNodeStreams map[string]jetstream.StreamConfig
}

func loadNATSDefinitions(t *testing.T) natsDefinitions {
	t.Helper()
	n := natsDefinitions{
		nackStreams: map[string]jetstream.StreamConfig{}, nackConsumers: map[string]jetstream.ConsumerConfig{},
		cliStreams: map[string]jetstream.StreamConfig{}, cliConsumers: map[string]jetstream.ConsumerConfig{},
		cliFiles: map[string]string{}, singleNodeStreams: map[string]jetstream.StreamConfig{},
	}
	objs, err := kube.RenderObjects(nackDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range kube.All[*kube.Stream](objs) {
		cfg, err := streamFromNACK(s.Spec)
		if err != nil {
			t.Fatalf("NACK Stream %s: %v", s.Name, err)
		}
		n.nackStreams[cfg.Name] = cfg
	}
	for _, c := range kube.All[*kube.Consumer](objs) {
		cfg, err := consumerFromNACK(c.Spec)
		if err != nil {
			t.Fatalf("NACK Consumer %s: %v", c.Name, err)
		}
		n.nackConsumers[c.Spec.StreamName+"/"+cfg.Durable] = cfg
	}

	files, err := filepath.Glob(filepath.Join(natsCLIDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		switch {
		case strings.HasSuffix(base, ".stream.json"):
			var cfg jetstream.StreamConfig
			decodeJSONFile(t, f, &cfg)
			if want := cfg.Name + ".stream.json"; base != want {
				t.Errorf("%s defines stream %s: name it %s", f, cfg.Name, want)
			}
			n.cliStreams[cfg.Name] = cfg
			n.cliFiles[cfg.Name] = f
		case strings.HasSuffix(base, ".consumer.json"):
			// `nats consumer add STREAM --config FILE` takes the
			// stream from the command line, so the file name carries it.
			stream, _, _ := strings.Cut(base, ".")
			var cfg jetstream.ConsumerConfig
			decodeJSONFile(t, f, &cfg)
			if want := stream + "." + cfg.Durable + ".consumer.json"; base != want {
				t.Errorf("%s defines consumer %s: name it %s", f, cfg.Durable, want)
			}
			n.cliConsumers[stream+"/"+cfg.Durable] = cfg
			n.cliFiles[stream+"/"+cfg.Durable] = f
		default:
			t.Errorf("%s: want STREAM.stream.json or STREAM.DURABLE.consumer.json", f)
		}
	}
	single, err := filepath.Glob(filepath.Join(natsCLIDir, "single-node", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range single {
		var cfg jetstream.StreamConfig
		decodeJSONFile(t, f, &cfg)
		if want := cfg.Name + ".stream.json"; filepath.Base(f) != want {
			t.Errorf("%s defines stream %s: name it %s", f, cfg.Name, want)
		}
		n.singleNodeStreams[cfg.Name] = cfg
		n.cliFiles["single-node/"+cfg.Name] = f
	}
	return n
}

// decodeJSONFile decodes a JSON file strictly: an unknown (or wrongly
// cased) field is an error, as a misspelt key would otherwise silently mean
// the server's default.
func decodeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.JSON(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// staticAgent is the trigger a route calls, for ConsumerConfig's metadata.
type staticAgent struct{ id agentapi.TriggerID }

func (a staticAgent) ID() agentapi.TriggerID { return a.id }
func (a staticAgent) Trigger(context.Context, agentapi.Event) (int, error) {
	return 0, fmt.Errorf("not called")
}

// wantConsumer is the consumer agentrelay creates (or updates to) at
// start-up for a configured route.
func wantConsumer(t *testing.T, r config.Route) jetstream.ConsumerConfig {
	t.Helper()
	id, err := agentapi.ParseTriggerID(r.TriggerID)
	if err != nil {
		t.Fatal(err)
	}
	return app.Route(r, staticAgent{id}).ConsumerConfig()
}

// wantDeadLetterStream is the dead-letter stream agentrelay creates when it
// is missing, from the configuration's dead_letter section.
func wantDeadLetterStream(c *config.Config) jetstream.StreamConfig {
	return appconfig.DeadLetter(c.DeadLetter).StreamConfig()
}

// The NACK resources and the nats CLI files define exactly the consumers
// agentrelay creates for the example configuration's routes, and the
// dead-letter stream as agentrelay would create it. A difference would have
// agentrelay (at every start) and NACK (at every reconcile) undo each other,
// and NACK's own defaults (ackPolicy none, storage memory, discard old) are
// wrong for agentrelay.
func TestNATSDefinitionsMatchWhatAgentrelayCreates(t *testing.T) {
	d := renderExample(t)
	n := loadNATSDefinitions(t)
	expected := map[string]bool{} // every definition must be one of these

	for i, rc := range d.config.Routes {
		r := app.Route(rc, nil).WithDefaults()
		key := r.Stream + "/" + r.Durable
		expected[key] = true
		want := wantConsumer(t, rc)
		for source, defs := range map[string]map[string]jetstream.ConsumerConfig{"NACK": n.nackConsumers, "nats CLI": n.cliConsumers} {
			got, ok := defs[key]
			if !ok {
				t.Errorf("routes[%d] (%s): no %s consumer %s on stream %s", i, r.Name, source, r.Durable, r.Stream)
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("routes[%d] (%s): %s consumer differs from what agentrelay creates:\n got %s\nwant %s", i, r.Name, source, toJSON(got), toJSON(want))
			}
		}
	}

	dl := wantDeadLetterStream(d.config)
	expected[dl.Name] = true
	for source, defs := range map[string]map[string]jetstream.StreamConfig{"NACK": n.nackStreams, "nats CLI": n.cliStreams} {
		got, ok := defs[dl.Name]
		if !ok {
			t.Errorf("no %s definition of the dead-letter stream %s", source, dl.Name)
			continue
		}
		if g, w := normalizeStream(got), normalizeStream(dl); !reflect.DeepEqual(g, w) {
			t.Errorf("%s dead-letter stream differs from what agentrelay creates:\n got %s\nwant %s", source, toJSON(g), toJSON(w))
		}
	}

	// The work streams are the operator's: agentrelay only needs them to
	// exist, hold the routes' subjects, keep messages on disk and stay
	// clear of the dead-letter subjects.
	checked := map[string]bool{}
	for i, r := range d.config.Routes {
		expected[r.Stream] = true
		nack, okN := n.nackStreams[r.Stream]
		cli, okC := n.cliStreams[r.Stream]
		if !okN || !okC {
			t.Errorf("routes[%d] (%s): stream %s must be defined for NACK and the nats CLI (NACK: %v, CLI: %v)", i, r.Name, r.Stream, okN, okC)
			continue
		}
		for _, subj := range r.Subjects {
			if !slices.ContainsFunc(nack.Subjects, func(s string) bool { return subject.Covers(s, subj) }) {
				t.Errorf("routes[%d] (%s): subject %s is not captured by stream %s (subjects %v)", i, r.Name, subj, r.Stream, nack.Subjects)
			}
		}
		if checked[r.Stream] {
			continue // for an earlier route
		}
		checked[r.Stream] = true
		if g, w := normalizeStream(nack), normalizeStream(cli); !reflect.DeepEqual(g, w) {
			t.Errorf("stream %s: the NACK and nats CLI definitions differ:\nNACK %s\n CLI %s", r.Stream, toJSON(g), toJSON(w))
		}
		if nack.Storage != jetstream.FileStorage {
			t.Errorf("stream %s: storage must be file (NACK's default is memory)", r.Stream)
		}
		for _, s := range nack.Subjects {
			if subject.Overlap(s, dl.Subjects[0]) {
				t.Errorf("stream %s subject %s overlaps the dead-letter subjects %s", r.Stream, s, dl.Subjects[0])
			}
		}
	}

	defined := slices.Concat(slices.Collect(maps.Keys(n.nackStreams)), slices.Collect(maps.Keys(n.nackConsumers)), slices.Collect(maps.Keys(n.cliFiles)))
	for _, key := range defined {
		if !expected[strings.TrimPrefix(key, "single-node/")] {
			t.Errorf("%s is defined in deploy/nats but the example configuration does not use it", key)
		}
	}
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// normalizeStream applies the server's own defaults: JetStream stores a
// zero limit as -1 (unlimited).
func normalizeStream(c jetstream.StreamConfig) jetstream.StreamConfig {
	for _, p := range []*int64{&c.MaxMsgs, &c.MaxBytes, &c.MaxMsgsPerSubject} {
		if *p == 0 {
			*p = -1
		}
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = -1
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = -1
	}
	return c
}

// streamFromNACK is the stream configuration NACK asks the server for: the
// spec with the CRD's defaults for omitted fields.
func streamFromNACK(s kube.StreamSpec) (jetstream.StreamConfig, error) {
	if s.Mirror != nil || len(s.Sources) > 0 || s.Placement != nil || s.RePublish != nil || s.SubjectTransform != nil || s.ConsumerLimits != nil {
		return jetstream.StreamConfig{}, fmt.Errorf("mirror, sources, placement, republish, subject transforms and consumer limits are not expected here; extend streamFromNACK")
	}
	orDefault := func(v *int, def int) int {
		if v == nil {
			return def
		}
		return *v
	}
	c := jetstream.StreamConfig{
		Name: s.Name, Description: s.Description, Subjects: s.Subjects,
		MaxConsumers:      orDefault(s.MaxConsumers, -1),
		MaxMsgs:           int64(orDefault(s.MaxMsgs, -1)),
		MaxBytes:          int64(orDefault(s.MaxBytes, -1)),
		MaxMsgSize:        int32(orDefault(s.MaxMsgSize, -1)),
		MaxMsgsPerSubject: int64(s.MaxMsgsPerSubject),
		Replicas:          max(s.Replicas, 1),
		NoAck:             s.NoAck, Sealed: s.Sealed, DenyDelete: s.DenyDelete, DenyPurge: s.DenyPurge,
		AllowDirect: s.AllowDirect, AllowRollup: s.AllowRollup, MirrorDirect: s.MirrorDirect,
		DiscardNewPerSubject: s.DiscardPerSubject, FirstSeq: s.FirstSequence, Metadata: s.Metadata,
		AllowMsgTTL: s.AllowMsgTTL,
	}
	var err error
	for _, f := range []struct {
		value, def string
		into       any
	}{
		{s.Retention, "limits", &c.Retention},
		{s.Storage, "memory", &c.Storage},
		{s.Discard, "old", &c.Discard},
		{s.Compression, "none", &c.Compression},
	} {
		err = enum(f.value, f.def, f.into, err)
	}
	for _, f := range []struct {
		value string
		into  *time.Duration
	}{{s.MaxAge, &c.MaxAge}, {s.DuplicateWindow, &c.Duplicates}, {s.SubjectDeleteMarkerTTL, &c.SubjectDeleteMarkerTTL}} {
		err = duration(f.value, f.into, err)
	}
	return c, err
}

// consumerFromNACK is the consumer configuration NACK asks the server for:
// the spec with the CRD's defaults (ackPolicy none, ackWait 1ns,
// deliverPolicy all, replayPolicy instant) for omitted fields.
func consumerFromNACK(s kube.ConsumerSpec) (jetstream.ConsumerConfig, error) {
	if s.DeliverSubject != "" || s.DeliverGroup != "" || s.FlowControl || s.HeartbeatInterval != "" ||
		s.OptStartSeq != 0 || s.OptStartTime != "" || s.PriorityPolicy != "" || s.PauseUntil != "" || s.SampleFreq != "" || s.RateLimitBps != 0 {
		return jetstream.ConsumerConfig{}, fmt.Errorf("push, start position, priority, pause, sampling and rate settings are not expected here; extend consumerFromNACK")
	}
	c := jetstream.ConsumerConfig{
		Durable: s.DurableName, Description: s.Description,
		FilterSubject: s.FilterSubject, FilterSubjects: s.FilterSubjects,
		MaxAckPending: s.MaxAckPending, MaxWaiting: s.MaxWaiting, HeadersOnly: s.HeadersOnly,
		MaxRequestBatch: s.MaxRequestBatch, MaxRequestMaxBytes: s.MaxRequestMaxBytes,
		Replicas: s.Replicas, MemoryStorage: s.MemStorage, Metadata: s.Metadata,
	}
	if s.MaxDeliver != nil {
		c.MaxDeliver = *s.MaxDeliver
	}
	var err error
	err = enum(s.DeliverPolicy, "all", &c.DeliverPolicy, err)
	err = enum(s.AckPolicy, "none", &c.AckPolicy, err)
	err = enum(s.ReplayPolicy, "instant", &c.ReplayPolicy, err)
	ackWait := s.AckWait
	if ackWait == "" {
		ackWait = "1ns"
	}
	err = duration(ackWait, &c.AckWait, err)
	err = duration(s.MaxRequestExpires, &c.MaxRequestExpires, err)
	err = duration(s.InactiveThreshold, &c.InactiveThreshold, err)
	for _, b := range s.BackOff {
		var d time.Duration
		err = duration(b, &d, err)
		c.BackOff = append(c.BackOff, d)
	}
	return c, err
}

// enum decodes a NACK enum value (or its default) into a JetStream policy
// type, whose JSON form uses the same words. It keeps the first error.
func enum(value, def string, into any, prev error) error {
	if value == "" {
		value = def
	}
	if err := json.Unmarshal([]byte(strconv.Quote(value)), into); err != nil && prev == nil {
		return fmt.Errorf("%q: %w", value, err)
	}
	return prev
}

// duration parses a NACK duration (a Go duration string; empty is zero). It
// keeps the first error.
func duration(value string, into *time.Duration, prev error) error {
	if value == "" {
		return prev
	}
	d, err := time.ParseDuration(value)
	if err != nil && prev == nil {
		return err
	}
	*into = d
	return prev
}

// The streams come for a cluster (R3) and for a single server (R1), the
// same but for their replicas: on a single nats-server the R3 definitions
// are refused (so `nats stream add` fails and the consumer adds after it),
// and the single-node ones, with the consumers after them, are accepted as
// they are.
func TestStreamDefinitionsForSingleNodeAndCluster(t *testing.T) {
	n := loadNATSDefinitions(t)
	if len(n.singleNodeStreams) != len(n.cliStreams) {
		t.Fatalf("%d single-node streams for %d streams", len(n.singleNodeStreams), len(n.cliStreams))
	}
	for name, r3 := range n.cliStreams {
		r1, ok := n.singleNodeStreams[name]
		if !ok {
			t.Errorf("stream %s has no single-node definition", name)
			continue
		}
		if r3.Replicas != 3 || r1.Replicas != 1 {
			t.Errorf("stream %s: %d replicas for a cluster, %d for a single server; want 3 and 1", name, r3.Replicas, r1.Replicas)
		}
		r1.Replicas = r3.Replicas
		if !reflect.DeepEqual(r1, r3) {
			t.Errorf("stream %s: the single-node definition differs from the cluster one in more than replicas:\n R1 %s\n R3 %s", name, toJSON(r1), toJSON(r3))
		}
	}

	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	js := connectJetStream(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, cfg := range n.cliStreams {
		if _, err := js.CreateStream(ctx, cfg); err == nil {
			t.Errorf("a single server accepted the R3 stream %s; the single-node set would not be needed", name)
		}
	}
	defineNATSResources(t, js)
	for key := range n.cliConsumers {
		stream, durable, _ := strings.Cut(key, "/")
		if _, err := js.Consumer(ctx, stream, durable); err != nil {
			t.Errorf("consumer %s: %v", key, err)
		}
	}
}
