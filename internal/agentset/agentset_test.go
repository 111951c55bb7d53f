package agentset_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/internal/agentset"
	"github.com/agentrelay/agentrelay/internal/testenv"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

func id(t *testing.T, s string) agentapi.TriggerID {
	t.Helper()
	tid, err := agentapi.ParseTriggerID(s)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

func writeToken(t *testing.T, dir, name, token string) {
	t.Helper()
	// As a Kubernetes Secret volume swaps it: a new file renamed over.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// world is the emulator on loopback with three agents, each with its own
// token, and a client for it.
func world(t *testing.T) (*emulator.Emulator, *agentapi.Client) {
	emu, url := testenv.Emulator(t,
		emulator.WithTrigger("agtch_support_eu", true), emulator.WithTrigger("agtch_support_us", true),
		emulator.WithTrigger("agtch_billing", true),
		emulator.WithToken("tok-eu", "agtch_support_eu"), emulator.WithToken("tok-us", "agtch_support_us"),
		emulator.WithToken("tok-billing", "agtch_billing"), emulator.WithToken("tok-shared", "*"),
	)
	c, err := agentapi.NewClient(url, agentapi.ClientOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return emu, c
}

func trigger(t *testing.T, s *agentset.Set, trigger, key string) (int, error) {
	t.Helper()
	a, err := s.Agent(id(t, trigger))
	if err != nil {
		t.Fatal(err)
	}
	return a.Trigger(context.Background(), agentapi.Event{Input: "hello", IdempotencyKey: key})
}

// Each agent is called with its own token, from a file named by its id;
// rotating one file in place changes that agent's token only, and a 401
// makes it re-read at once.
func TestTokenPerAgentFromADirectoryWithReload(t *testing.T) {
	emu, client := world(t)
	dir := t.TempDir()
	writeToken(t, dir, "agtch_support_eu", "tok-eu")
	writeToken(t, dir, "agtch_support_us", "tok-us")
	var reloads atomic.Int32
	s, err := agentset.New(client, agentset.Config{
		Allowed:  triggerglob.MustCompile("agtch_support_*"),
		Dir:      dir,
		Refresh:  time.Hour, // re-read only when told: deterministic
		OnReload: func(agentapi.TriggerID) { reloads.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ trigger, key string }{{"agtch_support_eu", "k1"}, {"agtch_support_us", "k2"}} {
		if status, err := trigger(t, s, tc.trigger, tc.key); status != 202 {
			t.Fatalf("%s: %d %v", tc.trigger, status, err)
		}
	}

	// Rotate eu's token to one the API does not know: its next call gets a
	// 401 (the file is re-read only after it) ...
	emu.AddToken("tok-eu-2", "agtch_support_eu")
	writeToken(t, dir, "agtch_support_eu", "tok-eu-2")
	emu.RevokeToken("tok-eu")
	status, err := trigger(t, s, "agtch_support_eu", "k3")
	if status != 401 || agentapi.ClassOfError(err) != agentapi.ClassUnauthorized {
		t.Fatalf("after the revocation: %d %v, want a 401", status, err)
	}
	// ... and the retry uses the new token.
	if status, err := trigger(t, s, "agtch_support_eu", "k3"); status != 202 {
		t.Fatalf("with the rotated token: %d %v", status, err)
	}
	if n := reloads.Load(); n != 1 {
		t.Errorf("%d reloads reported, want 1", n)
	}
	// us is untouched.
	if status, err := trigger(t, s, "agtch_support_us", "k4"); status != 202 {
		t.Fatalf("us after eu's rotation: %d %v", status, err)
	}
	if emu.Accepted("agtch_support_eu", "k3") != 1 || emu.Accepted("agtch_support_us", "k4") != 1 {
		t.Error("the emulator did not accept the calls")
	}
}

// The file of an agent added after start-up is found when it appears.
func TestTokenFileThatAppearsLater(t *testing.T) {
	_, client := world(t)
	dir := t.TempDir()
	s, err := agentset.New(client, agentset.Config{Allowed: triggerglob.MustCompile("agtch_*"), Dir: dir, Refresh: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	status, err := trigger(t, s, "agtch_billing", "b1")
	if status != 0 || !errors.Is(err, agentapi.ErrNoToken) {
		t.Fatalf("without a token file: %d %v, want ErrNoToken and no request", status, err)
	}
	writeToken(t, dir, "agtch_billing", "tok-billing")
	if status, err := trigger(t, s, "agtch_billing", "b1"); status != 202 {
		t.Fatalf("after the file appeared: %d %v", status, err)
	}
}

func TestRulesThenDirectoryThenTheRoutesToken(t *testing.T) {
	_, client := world(t)
	dir := t.TempDir()
	writeToken(t, dir, "agtch_support_us", "tok-us")
	s, err := agentset.New(client, agentset.Config{
		Allowed:  triggerglob.MustCompile("agtch_*"),
		Rules:    []agentset.Rule{{IDs: triggerglob.MustCompile("agtch_billing"), Tokens: agentapi.StaticToken(agentapi.NewSecret("tok-billing"))}},
		Dir:      dir,
		Fallback: agentapi.StaticToken(agentapi.NewSecret("tok-shared")),
	})
	if err != nil {
		t.Fatal(err)
	}
	for trig, key := range map[string]string{"agtch_billing": "r1", "agtch_support_us": "r2", "agtch_support_eu": "r3"} {
		if status, err := trigger(t, s, trig, key); status != 202 {
			t.Errorf("%s: %d %v", trig, status, err)
		}
	}
	// Without a directory and a fallback, an id no rule matches has none.
	s, err = agentset.New(client, agentset.Config{Allowed: triggerglob.MustCompile("agtch_*")})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := trigger(t, s, "agtch_billing", "r4"); status != 0 || !errors.Is(err, agentapi.ErrNoToken) {
		t.Errorf("no token anywhere: %d %v", status, err)
	}
}

func TestOnlyAllowedIDsAndABoundedCache(t *testing.T) {
	_, client := world(t)
	s, err := agentset.New(client, agentset.Config{
		Allowed:   triggerglob.MustCompile("agtch_support_*"),
		Fallback:  agentapi.StaticToken(agentapi.NewSecret("tok-shared")),
		MaxAgents: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Agent(id(t, "agtch_billing")); !errors.Is(err, agentset.ErrNotAllowed) {
		t.Fatalf("an id outside the patterns: %v", err)
	}
	a1, _ := s.Agent(id(t, "agtch_support_1"))
	a1again, _ := s.Agent(id(t, "agtch_support_1"))
	if a1 != a1again {
		t.Error("the agent of an id is not kept")
	}
	for _, x := range []string{"agtch_support_2", "agtch_support_3", "agtch_support_4"} {
		if _, err := s.Agent(id(t, x)); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n != 2 {
		t.Errorf("%d agents kept, want at most 2", n)
	}
	if _, err := agentset.New(client, agentset.Config{}); err == nil {
		t.Error("a set that allows nothing")
	}
	if _, err := agentset.New(client, agentset.Config{Allowed: triggerglob.MustCompile("agtch_*"), Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("a missing token directory")
	}
}
