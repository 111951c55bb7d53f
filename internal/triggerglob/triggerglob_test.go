package triggerglob

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	ps, err := Compile([]string{"agtch_support_*", "agtch_billing_?", "agtch_exact"})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{
		"agtch_support_eu":     true,
		"agtch_support_":       true,
		"agtch_support_a-b_c":  true,
		"agtch_billing_1":      true,
		"agtch_billing_12":     false,
		"agtch_exact":          true,
		"agtch_exact2":         false,
		"agtch_supportx":       false,
		"agtch_other":          false,
		"agtch_support_eu/../": false, // '*' stands for id characters only
		"agtch_support_a.b":    false,
		"":                     false,
	} {
		if got := ps.Match(id); got != want {
			t.Errorf("Match(%q) = %v, want %v", id, got, want)
		}
	}
	if (Patterns{}).Match("agtch_x") {
		t.Error("the zero Patterns matches")
	}
	if !MustCompile("agtch_*").Match("agtch_anything-at_all") {
		t.Error("agtch_* does not match everything")
	}
	if !MustCompile("agtch_*_eu_*").Match("agtch_a_eu_b_eu_c") {
		t.Error("two stars: no match")
	}
}

func TestCheckRefuses(t *testing.T) {
	for p, want := range map[string]string{
		"*":                                 `begins with "agtch_" (use "agtch_*"`,
		"support_*":                         "begins with",
		"agtch_a/b":                         "byte 7 is not",
		"agtch_[ab]":                        "byte 6 is not",
		"agtch_" + strings.Repeat("a", 300): "longer than",
	} {
		err := Check(p)
		if !errors.Is(err, ErrPattern) || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want %q", p, err, want)
		}
	}
	_, err := Compile([]string{"x", "agtch_ok", "y"})
	if err == nil || strings.Count(err.Error(), "invalid trigger id pattern") != 2 {
		t.Errorf("Compile lists every bad pattern: %v", err)
	}
}
