package telemetry

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/lmittmann/tint"
)

// With colour on, tint turns the text \x1b of a quoted value back into a
// raw ESC; neutralise must leave nothing that becomes one, whether the value
// holds a real ESC or the four characters \x1b.
func TestNeutraliseLeavesNoEscapeForColourOutput(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tint.NewHandler(&buf, &tint.Options{NoColor: false, ReplaceAttr: neutralise}))
	log.Info("m",
		"raw", "a \x1b[2J b",
		"text", `a \x1b[2J b`,
		"err", errors.New("boom \x1b]0;title\x07"),
		"bad", "x\xffy \ufffd z",
	)
	out := buf.String()
	// tint's own colouring is SGR only: ESC [ digits ; m.
	for i := 0; i < len(out); i++ {
		if out[i] != 0x1b {
			continue
		}
		j := i + 1
		if j < len(out) && out[j] == '[' {
			j++
			for j < len(out) && (out[j] >= '0' && out[j] <= '9' || out[j] == ';') {
				j++
			}
			if j < len(out) && out[j] == 'm' {
				continue
			}
		}
		t.Fatalf("escape sequence from a value reached the output at %d: %q", i, out)
	}
	for _, want := range []string{"<ESC>[2J", `\\x1B[2J`, "<ESC>]0;title", "x<xFF>y", "<U+FFFD> z"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
}

func TestNeutraliseKeepsPlainValuesAsTheyAre(t *testing.T) {
	a := neutralise(nil, slog.String("k", "plain value: 42"))
	if a.Value.String() != "plain value: 42" {
		t.Errorf("%q", a.Value.String())
	}
	if n := testing.AllocsPerRun(100, func() { neutralise(nil, slog.String("k", "plain value")) }); n != 0 {
		t.Errorf("%v allocations for a plain value", n)
	}
}
