// Package agentset is the set of agents a route that serves many agents
// calls: the agent of each trigger id the route's events name, with the
// token chosen for that id. It implements consumer.Agents.
//
// An id's token is, in order: the source of the first rule whose pattern
// matches the id; else the file named by the id in the token directory,
// when there is one; else the route's own token. Files are read when an id
// is first called and re-read when they change (agentapi.FileToken), so a
// token rotated in place, or the file of an agent added later, is picked
// up without a restart. An id with no token gets one from none of them:
// its calls fail as a 401 would (agentapi.ErrNoToken), without a request.
package agentset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/consumer"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// ErrNotAllowed is the error of Agent for an id outside the allowed
// patterns.
var ErrNotAllowed = errors.New("trigger id not allowed")

// DefaultMaxAgents bounds how many agents a Set keeps.
const DefaultMaxAgents = 10_000

// Rule gives the ids its pattern matches a token source.
type Rule struct {
	IDs    triggerglob.Patterns
	Tokens agentapi.TokenSource
}

// Config configures a Set. The zero value of each field means its default.
type Config struct {
	// Allowed are the ids the set serves: Agent refuses any other.
	Allowed triggerglob.Patterns
	// Rules choose an id's token source; the first that matches wins.
	Rules []Rule
	// Dir, when set, holds a token file per trigger id, named by the id.
	Dir string
	// Fallback is the token of an id no rule and no file serve; nil for
	// none.
	Fallback agentapi.TokenSource
	// Refresh is how often a token file is re-read, and how often a
	// missing one is looked for again. Default agentapi.DefaultTokenRefresh.
	Refresh time.Duration
	// MaxAgents bounds the agents kept; past it, one is dropped (and made
	// again when called). Default DefaultMaxAgents.
	MaxAgents int
	// OnReload, when set, is called with an id whose token file changed
	// and was read again (a rotation picked up). It runs on the request
	// path, under the token's lock: keep it short.
	OnReload func(id agentapi.TriggerID)
}

// Set is the agents of one route. It is safe for concurrent use.
type Set struct {
	client *agentapi.Client
	cfg    Config

	mu     sync.Mutex
	agents map[agentapi.TriggerID]*agentapi.Agent
}

// New returns the set of agents cfg describes, calling through client.
func New(client *agentapi.Client, cfg Config) (*Set, error) {
	if cfg.Allowed.Len() == 0 {
		return nil, errors.New("agentset: no allowed trigger ids")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = agentapi.DefaultTokenRefresh
	}
	if cfg.MaxAgents <= 0 {
		cfg.MaxAgents = DefaultMaxAgents
	}
	if cfg.Dir != "" {
		fi, err := os.Stat(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("agentset: token directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("agentset: token directory %s is not a directory", cfg.Dir)
		}
	}
	return &Set{client: client, cfg: cfg, agents: map[agentapi.TriggerID]*agentapi.Agent{}}, nil
}

// Agent implements consumer.Agents.
func (s *Set) Agent(id agentapi.TriggerID) (consumer.Agent, error) {
	a, err := s.agent(id)
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (s *Set) agent(id agentapi.TriggerID) (*agentapi.Agent, error) {
	if !s.cfg.Allowed.Match(id.String()) {
		return nil, fmt.Errorf("%w: %s is not in allowed_trigger_ids (%s)", ErrNotAllowed, id, s.cfg.Allowed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.agents[id]; ok {
		return a, nil
	}
	a, err := s.client.Agent(id, s.tokens(id))
	if err != nil {
		return nil, err
	}
	if len(s.agents) >= s.cfg.MaxAgents {
		for k := range s.agents {
			delete(s.agents, k)
			break
		}
	}
	s.agents[id] = a
	return a, nil
}

// tokens is id's token source (see the package comment).
func (s *Set) tokens(id agentapi.TriggerID) agentapi.TokenSource {
	for _, r := range s.cfg.Rules {
		if r.IDs.Match(id.String()) {
			return r.Tokens
		}
	}
	if s.cfg.Dir != "" {
		return &dirToken{id: id, path: filepath.Join(s.cfg.Dir, id.String()), fallback: s.cfg.Fallback, refresh: s.cfg.Refresh, onReload: s.cfg.OnReload, now: time.Now}
	}
	if s.cfg.Fallback != nil {
		return s.cfg.Fallback
	}
	return noToken{id}
}

// Len is the number of agents the set holds now.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.agents)
}

// noToken is the token source of an id nothing gives a token.
type noToken struct{ id agentapi.TriggerID }

func (n noToken) Token() (agentapi.Secret, error) {
	return agentapi.Secret{}, fmt.Errorf("%w: no token rule matches %s and the route has no token", agentapi.ErrNoToken, n.id)
}

// dirToken is an id's token file in the token directory, opened when it
// first exists; until then, the fallback's token, or ErrNoToken. A missing
// file is looked for again once per refresh interval, and at once after
// Invalidate (a 401).
type dirToken struct {
	id       agentapi.TriggerID
	path     string
	fallback agentapi.TokenSource
	refresh  time.Duration
	onReload func(agentapi.TriggerID)
	now      func() time.Time

	mu       sync.Mutex
	file     *agentapi.FileToken
	lookedAt time.Time
	lookErr  error
}

func (d *dirToken) Token() (agentapi.Secret, error) {
	d.mu.Lock()
	f := d.file
	if f == nil {
		now := d.now()
		if d.lookedAt.IsZero() || now.Sub(d.lookedAt) >= d.refresh {
			d.lookedAt = now
			f, d.lookErr = d.open()
			d.file = f
		}
	}
	lookErr := d.lookErr
	d.mu.Unlock()
	if f != nil {
		return f.Token()
	}
	if errors.Is(lookErr, os.ErrNotExist) && d.fallback != nil {
		return d.fallback.Token()
	}
	return agentapi.Secret{}, lookErr
}

// open reads the token file the first time; from then on the FileToken
// re-reads it when it changes.
func (d *dirToken) open() (*agentapi.FileToken, error) {
	if _, err := os.Stat(d.path); err != nil {
		return nil, fmt.Errorf("%w: no token file for %s: %w", agentapi.ErrNoToken, d.id, err)
	}
	f, err := agentapi.NewFileToken(d.path, d.refresh)
	if err != nil {
		return nil, err
	}
	if d.onReload != nil {
		id, fn := d.id, d.onReload
		f.OnChange(func() { fn(id) })
	}
	return f, nil
}

// Invalidate implements agentapi.Invalidator: after a 401 the file is read
// (or looked for) again at once.
func (d *dirToken) Invalidate() {
	d.mu.Lock()
	f := d.file
	d.lookedAt = time.Time{}
	d.mu.Unlock()
	if f != nil {
		f.Invalidate()
	}
	if inv, ok := d.fallback.(agentapi.Invalidator); ok {
		inv.Invalidate()
	}
}
