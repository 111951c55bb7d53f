package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/nats-io/nats.go/jetstream"
)

// OtherLabel stands in for a route or reason a metric label may not carry:
// one not configured (or not known to this version). A letter's headers
// are anyone's who may publish dead letters, and label values must stay a
// small fixed set.
const OtherLabel = "other"

// RouteReason is a route and a reason, as metric labels.
type RouteReason struct{ Route, Reason string }

// Waiting is what the dead-letter stream holds, by route and reason.
type Waiting struct {
	// Letters by route and reason. Routes not configured and reasons this
	// version does not know count under OtherLabel.
	Letters map[RouteReason]int
	// Oldest is when the oldest letter of each route (with letters) was
	// stored.
	Oldest map[string]time.Time
	// Complete is false when the stream held more letters than the
	// Backlog reads: the counts then cover the oldest ones only (the
	// oldest times are right for every route among them).
	Complete bool
}

// Backlog follows the dead-letter stream for metrics: letters waiting by
// route and reason, and the oldest per route. Its work is bounded: each
// Refresh asks for the stream's info, reads only letters stored since the
// last Refresh when the stream only grew (or lost its oldest letters to
// max_age), reads the whole stream again only when letters went from its
// middle (a replay or a purge), and never reads more than max letters'
// headers. It is not safe for concurrent use.
type Backlog struct {
	js     jetstream.JetStream
	cfg    deadletter.Config
	routes []string
	known  []string // Reasons: the reasons a label may name
	max    int

	letters           map[uint64]waitingLetter
	first, last, msgs uint64
	complete          bool
}

type waitingLetter struct {
	key    RouteReason
	stored time.Time
}

// NewBacklog follows the dead-letter stream cfg names, labelling letters of
// routes other than routes as OtherLabel, and reading at most max letters.
func NewBacklog(js jetstream.JetStream, cfg deadletter.Config, routes []string, max int) *Backlog {
	return &Backlog{js: js, cfg: cfg.WithDefaults(), routes: routes, known: Reasons(), max: max, letters: map[uint64]waitingLetter{}, complete: true}
}

// Refresh brings the backlog up to date and returns it. A stream that does
// not exist yet holds nothing.
func (b *Backlog) Refresh(ctx context.Context) (Waiting, error) {
	s, err := Open(ctx, b.js, b.cfg)
	if errors.Is(err, ErrNoStream) {
		b.reset()
		return b.snapshot(), nil
	}
	if err != nil {
		return Waiting{}, err
	}
	st := s.stream.CachedInfo().State
	switch {
	case st.Msgs == 0:
		b.reset()
	case st.FirstSeq == b.first && st.LastSeq == b.last && st.Msgs == b.msgs:
		// unchanged
	default:
		if err := b.update(ctx, s, st); err != nil {
			return Waiting{}, err
		}
	}
	b.first, b.last, b.msgs = st.FirstSeq, st.LastSeq, st.Msgs
	return b.snapshot(), nil
}

func (b *Backlog) reset() {
	clear(b.letters)
	b.first, b.last, b.msgs, b.complete = 0, 0, 0, true
}

// update reads what changed: the new letters when the stream only grew at
// its end and lost letters at its start, else everything again.
func (b *Backlog) update(ctx context.Context, s *Store, st jetstream.StreamState) error {
	for seq := range b.letters {
		if seq < st.FirstSeq {
			delete(b.letters, seq)
		}
	}
	added := st.LastSeq - min(b.last, st.LastSeq)
	from := b.last + 1
	if !b.complete || st.LastSeq < b.last || uint64(len(b.letters))+added != st.Msgs {
		// Letters went from the middle, the stream was re-created, or
		// not everything was read: read it all again.
		clear(b.letters)
		from = st.FirstSeq
	}
	b.complete = true
	limit := b.max - len(b.letters)
	if limit <= 0 {
		b.complete = false
		return nil
	}
	n := 0
	err := s.Scan(ctx, Filter{FromSeq: max(from, st.FirstSeq), MaxSeq: st.LastSeq}, true, func(l Letter) (bool, error) {
		if n == limit {
			b.complete = false
			return false, nil
		}
		n++
		b.letters[l.Seq] = waitingLetter{key: b.labels(l), stored: l.Stored}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("reading dead-letter stream %s: %w", b.cfg.Stream, err)
	}
	return nil
}

// labels are l's route and reason as bounded label values.
func (b *Backlog) labels(l Letter) RouteReason {
	k := RouteReason{Route: l.Route, Reason: l.Reason}
	if !slices.Contains(b.routes, k.Route) {
		k.Route = OtherLabel
	}
	if !slices.Contains(b.known, k.Reason) {
		k.Reason = OtherLabel
	}
	return k
}

func (b *Backlog) snapshot() Waiting {
	w := Waiting{Letters: map[RouteReason]int{}, Oldest: map[string]time.Time{}, Complete: b.complete}
	for _, l := range b.letters {
		w.Letters[l.key]++
		if o, ok := w.Oldest[l.key.Route]; !ok || l.stored.Before(o) {
			w.Oldest[l.key.Route] = l.stored
		}
	}
	return w
}
