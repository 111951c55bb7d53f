package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/dlq"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/streamscan"
)

// JetStream cannot be asked for a message by id (it keeps ids only to
// deduplicate), so a search reads the streams: each work stream and the
// dead-letter stream at once, each newest first, in slices that double in
// size (streamscan.NewestFirst), headers only, until a slice finds the id,
// the stream's start, or the deadline. A recent event is found after
// reading little; an old one after reading about twice what was stored
// after it. Since and Until narrow the range by time (the reading
// consumer starts by time, so the server finds the first message).

// Searched is what a search read of one stream.
type Searched struct {
	Stream string `json:"stream"`
	// From and To are the sequences read (the newest first, so From is
	// where it stopped), and FromTime and ToTime their stored times.
	From     uint64    `json:"from_seq"`
	To       uint64    `json:"to_seq"`
	FromTime time.Time `json:"from_time,omitzero"`
	ToTime   time.Time `json:"to_time,omitzero"`
	Messages int       `json:"messages"`
	// Whole: it read every message of the range asked (the whole stream,
	// or Since..Until); else it stopped at a match or the deadline.
	Whole bool `json:"whole"`
	// Stopped says why it did not read the whole range: "found" (an
	// older message with the same id is possible), "deadline".
	Stopped string `json:"stopped,omitempty"`
	// Range is the range asked: the stream's, narrowed by Since and Until.
	RangeFrom uint64 `json:"range_from_seq"`
	RangeTo   uint64 `json:"range_to_seq"`
}

// Progress is how far a search has read, reported at most every
// progressEvery.
type Progress struct {
	Stream string
	// Read counts the messages read so far, of Total in the range asked.
	Read, Total uint64
	// At is the stored time of the last message read.
	At      time.Time
	Elapsed time.Duration
}

const progressEvery = 250 * time.Millisecond

// firstSlice is the newest slice a search reads first.
const firstSlice = 16_384

// maxSearchHits bounds the messages a search tells the story of.
const maxSearchHits = 20

// maxReplaysSeen bounds the replays a search remembers per stream: more,
// and a story reads the stream again for its replays.
const maxReplaysSeen = 10_000

// coverage is what the search read of a work stream: the ranges (each
// From..To) and every replay in them.
type coverage struct {
	ranges   []streamscan.Slice
	replays  []seenReplay
	overflow bool // more replays than maxReplaysSeen: not all kept
}

type seenReplay struct {
	seq         uint64
	subject     string
	origin, key string
	count       int
}

type searchResult struct {
	refs     []ref
	searched []Searched
	notes    []string
}

// search finds the messages whose message id or Idempotency-Key is q.Arg
// in the work streams, and the messages whose dead letters carry it. The
// replays of an event share its key: only the first message of each event
// is kept (its story lists the replays).
func (x *teller) search(ctx context.Context, q EventQuery) (searchResult, error) {
	sctx := ctx
	if !q.Deadline.IsZero() {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(ctx, q.Deadline)
		defer cancel()
	}
	var (
		mu   sync.Mutex
		res  searchResult
		wg   sync.WaitGroup
		errs []error
	)
	found := func(r ref) {
		mu.Lock()
		defer mu.Unlock()
		same := func(o ref) bool { return o.stream == r.stream && o.seq == r.seq }
		if !slices.ContainsFunc(res.refs, same) && len(res.refs) < maxSearchHits {
			res.refs = append(res.refs, r)
		}
	}
	report := func(s *Searched, note string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if s != nil {
			res.searched = append(res.searched, *s)
		}
		if note != "" {
			res.notes = append(res.notes, note)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range x.streams() {
		cov := &coverage{}
		x.seen[name] = cov
		wg.Go(func() {
			s, note, err := x.searchStream(sctx, name, cov, found)
			report(s, note, err)
		})
	}
	if x.dl != nil {
		wg.Go(func() {
			s, err := x.searchLetters(sctx, found)
			report(s, "", err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	slices.SortFunc(res.searched, func(a, b Searched) int { return strings.Compare(a.Stream, b.Stream) })
	res.notes = append(res.notes, searchedNotes(q, res)...)
	sortRefs(res.refs)
	return res, nil
}

// bounds is the sequence range [lo, hi] of st that q's Since and Until
// select, and the number of messages in the stream.
func bounds(ctx context.Context, st jetstream.Stream, q EventQuery) (lo, hi uint64, err error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	lo, hi = info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return 1, 0, nil
	}
	if !q.Since.IsZero() {
		seq, err := streamscan.SeqAt(ctx, st, nil, q.Since)
		if err != nil {
			return 0, 0, err
		}
		lo = max(lo, seq)
	}
	if !q.Until.IsZero() {
		seq, err := streamscan.SeqAt(ctx, st, nil, q.Until)
		if err != nil {
			return 0, 0, err
		}
		hi = min(hi, seq-1)
	}
	return lo, hi, nil
}

// searchStream searches one work stream, newest first.
func (x *teller) searchStream(ctx context.Context, name string, cov *coverage, found func(ref)) (*Searched, string, error) {
	st, err := x.src.JS.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Sprintf("stream %s does not exist", name), nil
	}
	if err != nil {
		return nil, "", err
	}
	lo, hi, err := bounds(ctx, st, x.q)
	if isDeadline(ctx, err) {
		return &Searched{Stream: name, Stopped: "deadline"}, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	out := &Searched{Stream: name, RangeFrom: lo, RangeTo: hi}
	prog := x.progress(name, hi+1-min(lo, hi+1))
	hits := 0
	// A CloudEvents route keys an event without a message id by the
	// event's source and id, which structured mode keeps in the body.
	bodies := x.readsCloudEvents(name)
	low, err := streamscan.NewestFirst(ctx, lo, hi, firstSlice, func(ctx context.Context, sl streamscan.Slice) (bool, error) {
		res, err := streamscan.Scan(ctx, st, streamscan.Range{HeadersOnly: !bodies, FromSeq: sl.From, ToSeq: sl.To},
			func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
				if x.matchWork(ctx, name, m, md, bodies, cov, found) {
					hits++
				}
				prog(md.Timestamp)
				return true, nil
			})
		out.record(res)
		switch {
		case err == nil && res.Complete:
			cov.ranges = append(cov.ranges, sl)
		case res.Scanned > 0:
			cov.ranges = append(cov.ranges, streamscan.Slice{From: sl.From, To: res.LastSeq})
		}
		return hits > 0, err
	})
	return out.finish(low, lo, hits, ctx, err)
}

// readsCloudEvents reports whether a route of stream reads CloudEvents.
func (x *teller) readsCloudEvents(stream string) bool {
	return slices.ContainsFunc(x.routes, func(r dlq.Route) bool {
		return r.Stream == stream && r.Contract.Format == event.BodyCloudEvents
	})
}

// matchWork checks one work-stream message against the id (its message id,
// or its Idempotency-Key on any route that consumes it), and keeps it if it
// is a replay. withBody says the message was read with its body.
func (x *teller) matchWork(ctx context.Context, stream string, m jetstream.Msg, md *jetstream.MsgMetadata, withBody bool, cov *coverage, found func(ref)) bool {
	h := m.Headers()
	// A replay always carries its key (or its message id): its headers
	// give it.
	key, _ := event.IdempotencyKey(h, md)
	matches := key == x.q.Arg
	if withBody && !hasOwnKey(h) {
		// Keyed by the contract of each route that consumes it.
		for _, k := range keysOf(ctx, x.routes, stream, event.Message{Subject: m.Subject(), Data: m.Data(), Header: h, Meta: md}) {
			matches = matches || k.key == x.q.Arg
		}
	}
	origin := h.Get(deadletter.HeaderReplayOrigin)
	if h.Get(deadletter.HeaderReplayOf) != "" {
		if len(cov.replays) < maxReplaysSeen {
			count, _ := strconv.Atoi(h.Get(deadletter.HeaderReplayCount))
			cov.replays = append(cov.replays, seenReplay{seq: md.Sequence.Stream, subject: m.Subject(), origin: origin, key: key, count: count})
		} else {
			cov.overflow = true
		}
	}
	if h.Get("Nats-Msg-Id") != x.q.Arg && !matches {
		return false
	}
	// A replay's story is its event's: told from the message first
	// published, which lists the replays.
	r := ref{stream, md.Sequence.Stream, m.Subject()}
	if o, seq := deadletter.ParseOrigin(origin); o != "" {
		r = ref{o, seq, m.Subject()}
	}
	found(r)
	return true
}

// searchLetters searches the dead letters for the id, newest first.
func (x *teller) searchLetters(ctx context.Context, found func(ref)) (*Searched, error) {
	info, err := x.dl.Info(ctx)
	if isDeadline(ctx, err) {
		return &Searched{Stream: x.dl.Name(), Stopped: "deadline"}, nil
	}
	if err != nil {
		return nil, err
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		lo, hi = 1, 0
	}
	out := &Searched{Stream: x.dl.Name(), RangeFrom: lo, RangeTo: hi}
	prog := x.progress(x.dl.Name(), hi+1-min(lo, hi+1))
	hits := 0
	low, err := streamscan.NewestFirst(ctx, lo, hi, firstSlice, func(ctx context.Context, sl streamscan.Slice) (bool, error) {
		var res streamscan.Result
		err := x.dl.Scan(ctx, dlq.Filter{FromSeq: sl.From, MaxSeq: sl.To}, true, func(l dlq.Letter) (bool, error) {
			res.Scanned++
			if res.FirstSeq == 0 {
				res.FirstSeq, res.FirstTime = l.Seq, l.Stored
			}
			res.LastSeq, res.LastTime = l.Seq, l.Stored
			if l.IdempotencyKey == x.q.Arg || l.OriginalMsgID() == x.q.Arg {
				st, seq := l.Origin()
				found(ref{st, seq, l.OrigSubject})
				hits++
			}
			prog(l.Stored)
			return true, nil
		})
		out.record(res)
		return hits > 0, err
	})
	s, _, err := out.finish(low, lo, hits, ctx, err)
	return s, err
}

// record adds what one slice read.
func (s *Searched) record(res streamscan.Result) {
	if res.Scanned == 0 {
		return
	}
	s.Messages += res.Scanned
	if s.To == 0 || res.LastSeq > s.To {
		s.To, s.ToTime = res.LastSeq, res.LastTime
	}
	if s.From == 0 || res.FirstSeq < s.From {
		s.From, s.FromTime = res.FirstSeq, res.FirstTime
	}
}

// finish says how a stream's search ended: a deadline is not an error.
func (s *Searched) finish(low, lo uint64, hits int, ctx context.Context, err error) (*Searched, string, error) {
	switch {
	case isDeadline(ctx, err):
		s.Stopped = "deadline"
	case err != nil:
		return nil, "", err
	case low <= lo:
		s.Whole = true
	case hits > 0:
		s.Stopped = "found"
	}
	return s, "", nil
}

// isDeadline reports whether err is the search's deadline (not the
// caller's cancellation).
func isDeadline(ctx context.Context, err error) bool {
	return err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// progress returns the function a stream's search calls for each message
// read: it reports to x.q.Progress at most every progressEvery.
func (x *teller) progress(stream string, total uint64) func(time.Time) {
	if x.q.Progress == nil {
		return func(time.Time) {}
	}
	start := time.Now()
	var read uint64
	var last time.Time
	return func(at time.Time) {
		read++
		if now := time.Now(); now.Sub(last) >= progressEvery {
			last = now
			x.q.Progress(Progress{Stream: stream, Read: read, Total: total, At: at, Elapsed: now.Sub(start)})
		}
	}
}

// searchedNotes says how far the search looked, when it did not read
// everything, and why nothing was found.
func searchedNotes(q EventQuery, res searchResult) []string {
	var notes []string
	for _, s := range res.searched {
		switch {
		case s.Stopped == "deadline":
			notes = append(notes, fmt.Sprintf("%s: the deadline came before the search finished; %s", s.Stream, s.Text()))
		case s.Stopped == "found" && len(res.refs) > 0:
			notes = append(notes, fmt.Sprintf("%s: %s; it stopped at the first match, newest first (an older message with the same id was not looked for: narrow with --since/--until to search further back)", s.Stream, s.Text()))
		}
	}
	if len(res.refs) > 0 {
		return notes
	}
	for _, s := range res.searched {
		if s.Stopped == "" {
			notes = append(notes, fmt.Sprintf("%s: %s", s.Stream, s.Text()))
		}
	}
	hint := ""
	if !q.Since.IsZero() || !q.Until.IsZero() {
		hint = " within the times given"
	}
	return append(notes, fmt.Sprintf("no message with message id or Idempotency-Key %q%s in what was searched. JetStream keeps message ids only to deduplicate (for the stream's duplicate window) and cannot be asked for a message by id; a message removed from its stream (acked on a work-queue stream, expired, purged) is found only through its dead letter, if it has one", q.Arg, hint))
}

// Text says what was read, for a reader: "searched sequences 9001 to 10000
// (stored 10:00:00Z to 10:10:00Z), 1000 messages, of 1 to 10000".
func (s Searched) Text() string {
	if s.Messages == 0 {
		if s.RangeTo < s.RangeFrom {
			return "no messages in the range searched"
		}
		return fmt.Sprintf("nothing read of sequences %d to %d", s.RangeFrom, s.RangeTo)
	}
	what := fmt.Sprintf("searched sequences %d to %d (stored %s to %s), %s", s.From, s.To,
		s.FromTime.UTC().Format(time.RFC3339), s.ToTime.UTC().Format(time.RFC3339), Count(s.Messages, "message", "messages"))
	if s.Whole {
		return what + ", all of the range searched"
	}
	return what + fmt.Sprintf(", of %d to %d: older messages were not searched", s.RangeFrom, s.RangeTo)
}
