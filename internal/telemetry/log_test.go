package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lmittmann/tint"
)

// With colour on, tint turns the text \x1b of a quoted value back into a
// raw ESC; neutralise must leave nothing that becomes one, whether the value
// holds a real ESC or the four characters \x1b.
func TestNeutraliseLeavesNoEscapeForColourOutput(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tint.NewTextHandler(&buf, &tint.Options{NoColor: false, ReplaceAttr: neutralise}))
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

// JSON logs carry durations as people read them, not as nanosecond
// integers; so does the text format.
func TestLogsWriteReadableDurations(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("retry scheduled", "delay", 1922086327*time.Nanosecond, slog.Group("g", slog.Duration("took", 12345678*time.Nanosecond)))
	var got struct {
		Delay string `json:"delay"`
		G     struct {
			Took string `json:"took"`
		} `json:"g"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if got.Delay != "1.922s" || got.G.Took != "12.346ms" {
		t.Errorf("durations written as %q and %q: %s", got.Delay, got.G.Took, buf.String())
	}

	buf.Reset()
	if log, err = NewLogger(&buf, slog.LevelInfo, "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("retry scheduled", "delay", 1922086327*time.Nanosecond)
	if out := buf.String(); !strings.Contains(out, "delay=1.922s") {
		t.Errorf("text output: %q", out)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 850: "850ns", 12345: "12.345µs", 12345678: "12.346ms", 1922086327: "1.922s",
		150*time.Second + 499*time.Microsecond: "2m30s", -1922086327: "-1.922s", 3 * time.Hour: "3h0m0s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%d) = %q, want %q", int64(d), got, want)
		}
	}
}

// A URL's user info and query never reach a log, in either format, whether
// it is in the message, a string or an error, and whether url.Parse can
// read it or not.
func TestLogsRedactURLs(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := NewLogger(&buf, slog.LevelInfo, format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("dial nats://user:SECRET1@host failed",
			"server", "ftp://user:SECRETPW1@host",
			"endpoint", "https://api.example.com/v1?token=SECRETQ2",
			"err", errors.New(`parse "nats://user:SEC%zzRETN7@h:4222": invalid URL escape "%zz"`),
			slog.Group("g", "u", "wss://u:SECRET3@h"),
		)
		out := buf.String()
		for _, secret := range []string{"SECRET", "RETN7"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s: a secret reached the log: %s", format, out)
			}
		}
		for _, want := range []string{"nats://REDACTED@host", "ftp://REDACTED@host", "https://api.example.com/v1?REDACTED", "wss://REDACTED@h"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: log lacks %q: %s", format, want, out)
			}
		}
	}
}
