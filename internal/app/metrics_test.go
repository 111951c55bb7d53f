package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/testenv"
)

// scrapeLine returns the /metrics line that starts with series, "" when
// there is none.
func scrapeLine(t *testing.T, base, series string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return line
		}
	}
	return ""
}

// A rotated token file is picked up and counted in
// agentrelay_token_reloads_total, scraped from the running worker; the
// rotation is logged without the token.
func TestTokenRotationIsCounted(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	n.CreateStream(t, jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}})
	emu, apiURL := testenv.Emulator(t, emulator.WithToken("t", "agtch_r"), emulator.WithTrigger("agtch_r", true))
	metrics := freePort(t)
	cfg := testConfig(t, n.Server.ClientURL(), metrics)
	cfg.API.BaseURL, cfg.API.AllowInsecureHTTP = apiURL, true
	var logs testenv.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan string, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), Options{Started: func(a string) { started <- a }})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not start")
	}
	base := "http://" + metrics
	series := `agentrelay_token_reloads_total{route="r"}`
	if got := scrapeLine(t, base, series); got != series+" 0" {
		t.Fatalf("before any rotation: %q, want %q", got, series+" 0")
	}
	_, js := n.Connect(t)
	if _, err := js.Publish(context.Background(), "late.a", []byte(`{"input":"one"}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "first event accepted with the old token", func() bool { return emu.LedgerLen() == 1 })

	emu.AddToken("rotated-secret-9f1", "agtch_r")
	emu.RevokeToken("t")
	writeToken(t, cfg.Routes[0].Token.File, "rotated-secret-9f1\n")
	if _, err := js.Publish(context.Background(), "late.b", []byte(`{"input":"two"}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "second event accepted with the new token", func() bool { return emu.LedgerLen() == 2 })
	testenv.Eventually(t, 5*time.Second, "rotation counted", func() bool { return scrapeLine(t, base, series) == series+" 1" })
	if !hasLog(logs.String(), "INFO", "token file changed") {
		t.Errorf("rotation not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "rotated-secret-9f1") {
		t.Error("the token appears in the logs")
	}
}

func writeToken(t *testing.T, path, v string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
