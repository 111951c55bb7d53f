package dlq

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// `dlq list/replay --subject` finds the letters of long subjects too, whose
// dead-letter subject was shortened to a digest: by exact subject, and by
// wildcard patterns.
func TestScanBySubjectFindsShortenedSubjects(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := deadletter.Config{}.WithDefaults()
	if err := deadletter.NewWriter(n.JS, cfg).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	long := "agents.complaints." + strings.Repeat("b", 2000)
	for i, orig := range []string{"agents.complaints.new", long, "agents.refunds.new"} {
		f := deadletter.Facts{Reason: "forbidden", Route: "complaints", Stream: "S", StreamSeq: uint64(i + 1), OrigSubject: orig, Attempts: 1}
		e := deadletter.Encode(f, nil, []byte(`{"input":"x"}`), deadletter.Target{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, MaxPayload: 1 << 20})
		n.Publish(t, e.Msg)
	}
	s, err := Open(ctx, n.JS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for pattern, want := range map[string][]string{
		long:                    {long},
		"agents.complaints.new": {"agents.complaints.new"},
		"agents.complaints.*":   {"agents.complaints.new", long},
		"agents.*.new":          {"agents.complaints.new", "agents.refunds.new"},
		"*.complaints.>":        {"agents.complaints.new", long},
		">":                     {"agents.complaints.new", long, "agents.refunds.new"},
		"agents.nosuch":         nil,
	} {
		var got []string
		err := s.Scan(ctx, Filter{Subject: pattern}, true, func(l Letter) (bool, error) {
			got = append(got, l.OrigSubject)
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("--subject %.40q: %d letters %.120q, want %.120q", pattern, len(got), got, want)
		}
	}
}
