package subject

import "testing"

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.*", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"*.b.>", "x.b.y", true},
		{"*.b.>", "x.c.y", false},
		{"a", "a.b", false},
	} {
		if got := Matches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}

func TestCoversAndOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b            string
		covers, overlap bool
	}{
		{"agents.>", "agents.complaints.>", true, true},
		{"agents.*", "agents.complaints", true, true},
		{"agents.*", "agents.complaints.>", false, false}, // > needs a third token
		{"agents.*", "agents.*", true, true},
		{"agents.complaints", "agents.*", false, true},
		{"agents.complaints.>", "agents.>", false, true},
		{"agents.>", "agentrelay.dlq.>", false, false},
		{"agentrelay.>", "agentrelay.dlq.>", true, true},
		{">", "agentrelay.dlq.>", true, true},
		{">", "a", true, true},
		{"agents", "agents.x", false, false},
		{"agents.x", "agents.x", true, true},
		{"a.*.c", "a.b.>", false, true},
	} {
		if got := Covers(tc.a, tc.b); got != tc.covers {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.covers)
		}
		if got := Overlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("Overlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.overlap)
		}
		if got := Overlap(tc.b, tc.a); got != tc.overlap {
			t.Errorf("Overlap(%q, %q) = %v, want %v (symmetric)", tc.b, tc.a, got, tc.overlap)
		}
	}
}

// A subject a filter matches is covered by it, and overlaps it.
func TestMatchesAgreesWithCovers(t *testing.T) {
	for _, f := range []string{"a", "a.b", "a.*", "a.>", ">", "*.b", "*.*.c"} {
		for _, s := range []string{"a", "a.b", "a.c", "x.b", "a.b.c", "x.y.c"} {
			if Matches(f, s) != Covers(f, s) || Matches(f, s) != Overlap(f, s) {
				t.Errorf("%q vs literal %q: Matches %v, Covers %v, Overlap %v", f, s, Matches(f, s), Covers(f, s), Overlap(f, s))
			}
		}
	}
}
