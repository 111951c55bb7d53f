// Package streamscan reads a range of a JetStream stream for the SRE
// commands (events, dlq, status): one helper, Scan, that every stream read
// goes through, and NewestFirst, which walks a sequence range in slices from
// its end, for searches whose answer is most likely recent.
//
// A scan reads through a short-lived ordered consumer: no acks, nothing
// that could disturb the worker's durable consumers, and the consumer is
// deleted when the scan ends (however it ends), not an inactivity threshold
// later: a worker's backlog reader scans every lag_interval, and leftovers
// would pile up to the server's consumer limit.
package streamscan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Range selects what a scan reads. The zero value reads the whole stream.
type Range struct {
	// Subjects, when set, are the subject filters of the reading consumer.
	Subjects []string
	// HeadersOnly leaves the bodies on the server (a message's size is
	// still in its Nats-Msg-Size header).
	HeadersOnly bool
	// FromSeq starts the scan at this stream sequence; else FromTime at the
	// first message stored at or after it; else at the stream's start.
	FromSeq  uint64
	FromTime time.Time
	// ToSeq, when set, ends the scan after this sequence; ToTime, when set,
	// before the first message stored at or after it.
	ToSeq  uint64
	ToTime time.Time
	// Limit, when set, ends the scan after this many messages.
	Limit int
}

// Result says what a scan read: how many messages, the first and last of
// them (sequence and stored time), and whether it reached the end of its
// range (Complete) or stopped early (fn, Limit, or ctx).
type Result struct {
	Scanned             int
	FirstSeq, LastSeq   uint64
	FirstTime, LastTime time.Time
	Complete            bool
}

// idleWait bounds how long a scan waits for a message the server said was
// pending; the server may have removed it meanwhile (a work-queue ack, an
// expiry), and then nothing more comes.
const idleWait = 2 * time.Second

// pullBatch is how many messages a scan keeps requested at once: enough to
// keep the server streaming, little enough to hold in memory headers-only.
const pullBatch = 1024

// deleteWait bounds the deletion of the reading consumer at the end.
const deleteWait = 2 * time.Second

// Visit is called for each message read; returning false (or an error)
// ends the scan.
type Visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)

// Scan reads st over r, oldest first, calling fn for each message, until fn
// says stop, r's end, the stream's end, or ctx ends (then it returns ctx's
// error, and what it read so far).
func Scan(ctx context.Context, st jetstream.Stream, r Range, fn Visit) (Result, error) {
	var res Result
	if r.ToSeq > 0 && r.FromSeq > r.ToSeq {
		res.Complete = true
		return res, nil
	}
	c, err := st.OrderedConsumer(ctx, consumerConfig(r))
	if err != nil {
		return res, fmt.Errorf("reading stream %s: %w", st.CachedInfo().Config.Name, err)
	}
	defer deleteConsumer(ctx, st, c)
	if c.CachedInfo().NumPending == 0 {
		res.Complete = true
		return res, nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(pullBatch))
	if err != nil {
		return res, fmt.Errorf("reading stream %s: %w", st.CachedInfo().Config.Name, err)
	}
	defer it.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		m, err := it.Next(jetstream.NextMaxWait(idleWait))
		switch {
		case errors.Is(err, nats.ErrTimeout):
			res.Complete = true // what was pending is gone
			return res, nil
		case err != nil:
			return res, fmt.Errorf("reading stream %s: %w", st.CachedInfo().Config.Name, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return res, err
		}
		if past(r, md) {
			res.Complete = true
			return res, nil
		}
		res.add(md)
		more, err := fn(m, md)
		if err != nil || !more {
			return res, err
		}
		if md.NumPending == 0 || (r.ToSeq > 0 && md.Sequence.Stream >= r.ToSeq) {
			res.Complete = true
			return res, nil
		}
		if r.Limit > 0 && res.Scanned >= r.Limit {
			return res, nil
		}
	}
}

func consumerConfig(r Range) jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{HeadersOnly: r.HeadersOnly, FilterSubjects: r.Subjects, InactiveThreshold: time.Minute}
	switch {
	case r.FromSeq > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = r.FromSeq
	case !r.FromTime.IsZero():
		from := r.FromTime
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &from
	}
	return cfg
}

// past reports whether md lies beyond r's end.
func past(r Range, md *jetstream.MsgMetadata) bool {
	return (r.ToSeq > 0 && md.Sequence.Stream > r.ToSeq) || (!r.ToTime.IsZero() && !md.Timestamp.Before(r.ToTime))
}

func (res *Result) add(md *jetstream.MsgMetadata) {
	if res.Scanned == 0 {
		res.FirstSeq, res.FirstTime = md.Sequence.Stream, md.Timestamp
	}
	res.Scanned++
	res.LastSeq, res.LastTime = md.Sequence.Stream, md.Timestamp
}

// deleteConsumer removes the reading consumer, under its current name (an
// ordered consumer recreates itself under a new one after a gap), even
// when ctx has ended.
func deleteConsumer(ctx context.Context, st jetstream.Stream, c jetstream.Consumer) {
	info := c.CachedInfo()
	if info == nil || info.Name == "" {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteWait)
	defer cancel()
	_ = st.DeleteConsumer(dctx, info.Name)
}

// SeqAt returns the sequence of the first message of st stored at or after
// t (on subjects, when set), or the stream's last sequence plus one when
// there is none.
func SeqAt(ctx context.Context, st jetstream.Stream, subjects []string, t time.Time) (uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	after := info.State.LastSeq + 1
	var seq uint64
	_, err = Scan(ctx, st, Range{Subjects: subjects, HeadersOnly: true, FromTime: t, Limit: 1},
		func(_ jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			seq = md.Sequence.Stream
			return false, nil
		})
	if err != nil || seq == 0 {
		return after, err
	}
	return seq, nil
}

// Slice is one sequence range NewestFirst hands to its scan function.
type Slice struct{ From, To uint64 }

// NewestFirst calls scan for consecutive slices of [lo, hi], from hi down
// to lo, the first of size first and each next one twice the size of the
// one before (up to maxSlice), until scan reports done, ctx ends or lo is
// reached. It returns the lowest sequence it covered (hi+1 when none).
// Searching newest first finds a recent message after reading little, and
// an old one after reading no more than about twice what lies above it.
func NewestFirst(ctx context.Context, lo, hi, first uint64, scan func(context.Context, Slice) (done bool, err error)) (uint64, error) {
	covered := hi + 1
	if lo == 0 {
		lo = 1
	}
	size := max(first, 1)
	for covered > lo {
		if err := ctx.Err(); err != nil {
			return covered, err
		}
		from := lo
		if covered-lo > size {
			from = covered - size
		}
		done, err := scan(ctx, Slice{From: from, To: covered - 1})
		if err != nil {
			return covered, err
		}
		covered = from
		if done {
			return covered, nil
		}
		size = min(size*2, maxSlice)
	}
	return covered, nil
}

// maxSlice bounds a slice of NewestFirst: slices are scanned whole (an
// ordered consumer cannot read backwards), so a hit in a huge slice costs
// the whole slice.
const maxSlice = 262_144
