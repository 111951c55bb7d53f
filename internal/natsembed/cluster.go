package natsembed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterReadyTimeout bounds how long StartCluster waits for a JetStream
// meta leader that all nodes follow. It takes about a second on an idle
// machine; the bound is generous for a loaded one.
const clusterReadyTimeout = 60 * time.Second

// ErrNoStreamLeader is returned by Cluster.StreamLeader when no running node
// currently leads the stream (e.g. during an election, or if the stream does
// not exist).
var ErrNoStreamLeader = errors.New("natsembed: no stream leader")

// Cluster is a set of embedded servers routed into one JetStream cluster.
// Each node is a *Server and can be killed and restarted on its own.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts n ≥ 2 routed JetStream servers on random client and
// cluster ports, node i storing under filepath.Join(dir, "n<i>"), and waits
// until every node follows one JetStream meta leader that sees all n nodes
// current and online (so an R3 stream can be created right away) and a
// client's account info request succeeds.
//
// Host, SyncAlways, Logger, MaxPayload and MaxControlLine of base apply to
// every node; base.ServerName, if set, replaces the default node name prefix
// "n" (nodes are named prefix0, prefix1, …). base.Port and base.StoreDir
// must be zero.
func StartCluster(n int, dir string, base Options) (*Cluster, error) {
	if n < 2 {
		return nil, fmt.Errorf("natsembed: cluster needs at least 2 nodes, got %d", n)
	}
	if dir == "" {
		return nil, errors.New("natsembed: cluster dir is required")
	}
	if base.Port != 0 || base.StoreDir != "" {
		return nil, errors.New("natsembed: base Options for a cluster must not set Port or StoreDir")
	}
	if base.Host == "" {
		base.Host = "127.0.0.1"
	}
	var lastErr error
	for attempt := 0; attempt < listenAttempts; attempt++ {
		c, err := startCluster(n, dir, base)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !isAddrInUse(err) {
			break
		}
	}
	return nil, lastErr
}

func startCluster(n int, dir string, base Options) (*Cluster, error) {
	prefix := base.ServerName
	if prefix == "" {
		prefix = "n"
	}
	// Pick all ports first: every node's routes list all cluster ports.
	clientPorts := make([]int, n)
	clusterPorts := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		var err error
		if clientPorts[i], err = freePort(base.Host); err != nil {
			return nil, err
		}
		if clusterPorts[i], err = freePort(base.Host); err != nil {
			return nil, err
		}
		routes[i] = dialURL("nats-route", base.Host, clusterPorts[i])
	}
	c := &Cluster{nodes: make([]*Server, n)}
	for i := range n {
		o := base
		o.ServerName = fmt.Sprintf("%s%d", prefix, i)
		o.Port = clientPorts[i]
		o.StoreDir = filepath.Join(dir, o.ServerName)
		s, err := newServer(o, &clusterConfig{name: prefix + "-cluster", port: clusterPorts[i], routes: routes})
		if err != nil {
			return nil, err
		}
		c.nodes[i] = s
	}

	// Start the nodes in parallel; each start only waits for its own
	// listeners, not for its peers.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range c.nodes {
		wg.Go(func() {
			s.opMu.Lock()
			defer s.opMu.Unlock()
			errs[i] = s.start()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Shutdown()
		return nil, err
	}
	if err := c.waitReady(clusterReadyTimeout); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// waitReady waits for a meta leader that sees all nodes, then for a
// successful JetStream account info request over a client connection.
func (c *Cluster) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !c.metaReady() {
		select {
		case <-ctx.Done():
			return errors.New("natsembed: cluster: no JetStream meta leader followed by all nodes")
		case <-tick.C:
		}
	}
	nc, err := nats.Connect(c.ClientURLs(), nats.Name("natsembed-cluster-check"))
	if err != nil {
		return fmt.Errorf("natsembed: cluster: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("natsembed: cluster: %w", err)
	}
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsembed: cluster: JetStream account info: %w", err)
		case <-tick.C:
		}
	}
}

// metaReady reports whether every node follows one meta leader, the
// leader counts the other n-1 nodes as current and online peers, and every
// follower is current. A leader that merely lists n peers is not enough: a
// node that has not caught up can still start an election, and a stream
// create sent meanwhile gets no answer until the client gives up; a peer
// the leader does not yet see online cannot be given a replica.
func (c *Cluster) metaReady() bool {
	leader := ""
	for _, s := range c.nodes {
		ns := s.NATS()
		if ns == nil || !ns.Running() {
			return false
		}
		jsi, err := ns.Jsz(&server.JSzOptions{})
		if err != nil || jsi.Meta == nil || jsi.Meta.Leader == "" || (leader != "" && jsi.Meta.Leader != leader) {
			return false
		}
		leader = jsi.Meta.Leader
		if !ns.JetStreamIsLeader() {
			if !ns.JetStreamIsCurrent() {
				return false
			}
			continue
		}
		if len(jsi.Meta.Replicas) != len(c.nodes)-1 {
			return false
		}
		for _, p := range jsi.Meta.Replicas {
			if !p.Current || p.Offline {
				return false
			}
		}
	}
	return true
}

// Len returns the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i (0-based), or nil if i is out of range.
func (c *Cluster) Node(i int) *Server {
	if i < 0 || i >= len(c.nodes) {
		return nil
	}
	return c.nodes[i]
}

// ClientURLs returns the client URLs of all nodes, comma-joined, as
// nats.Connect accepts them; a client then reconnects to any live node.
func (c *Cluster) ClientURLs() string {
	urls := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// StreamLeader returns the index of the running node that leads the given
// stream of the default ($G) account, or ErrNoStreamLeader. It reports the
// current local view of the nodes and does not wait; poll it after killing a
// leader.
func (c *Cluster) StreamLeader(stream string) (int, error) {
	for i, s := range c.nodes {
		ns := s.NATS()
		if ns != nil && ns.Running() && ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w for %q", ErrNoStreamLeader, stream)
}

// Current returns nil when node i is a current replica of the stream and of
// each of the named consumers of the default ($G) account, and otherwise an
// error saying what is not yet current. It does not wait; poll it after a
// restart.
//
// Wait for it before asking a restarted node's consumers anything. Until a
// restarted member has set up its replica of a consumer, nats-server
// answers that consumer's info request from it at once, with the
// consumer's configuration and an empty state (ack floor 0, nothing
// pending, no cluster info), and a client takes the first answer it gets,
// which is usually that one rather than the leader's.
func (c *Cluster) Current(i int, stream string, consumers ...string) error {
	s := c.Node(i)
	if s == nil {
		return fmt.Errorf("natsembed: no node %d", i)
	}
	ns := s.NATS()
	switch {
	case ns == nil || !ns.Running():
		return fmt.Errorf("natsembed: node %d is not running", i)
	case !ns.JetStreamIsCurrent():
		return fmt.Errorf("natsembed: node %d: JetStream meta group not current", i)
	case !ns.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream):
		return fmt.Errorf("natsembed: node %d: stream %q not current", i, stream)
	}
	if len(consumers) == 0 {
		return nil
	}
	acc, err := ns.JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true, Consumer: true})
	if err != nil {
		return fmt.Errorf("natsembed: node %d: %w", i, err)
	}
	local := map[string]bool{}
	for _, sd := range acc.Streams {
		if sd.Name == stream {
			for _, ci := range sd.Consumer {
				local[ci.Name] = true
			}
		}
	}
	for _, name := range consumers {
		if !local[name] {
			return fmt.Errorf("natsembed: node %d: consumer %q of %q not set up", i, name, stream)
		}
		// Healthz checks the consumer's raft node: present, the one the
		// consumer uses, its monitor running, healthy.
		h := ns.Healthz(&server.HealthzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Stream: stream, Consumer: name})
		if h.StatusCode != http.StatusOK {
			return fmt.Errorf("natsembed: node %d: %s", i, h.Error)
		}
	}
	return nil
}

// Shutdown shuts all nodes down gracefully, in parallel, and waits. It is
// idempotent.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, s := range c.nodes {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
}
