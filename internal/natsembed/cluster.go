package natsembed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterReadyTimeout bounds how long StartCluster waits for a JetStream
// meta leader that knows all nodes.
const clusterReadyTimeout = 20 * time.Second

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
// until a JetStream meta leader exists that sees all n nodes (so an R3 stream
// can be created right away) and a client's account info request succeeds.
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
			return errors.New("natsembed: cluster: no JetStream meta leader seeing all nodes")
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

func (c *Cluster) metaReady() bool {
	for _, s := range c.nodes {
		ns := s.NATS()
		if ns != nil && ns.JetStreamIsLeader() {
			return len(ns.JetStreamClusterPeers()) == len(c.nodes)
		}
	}
	return false
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

// Shutdown shuts all nodes down gracefully, in parallel, and waits. It is
// idempotent.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, s := range c.nodes {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
}
