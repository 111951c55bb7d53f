package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
)

// A token with a byte an HTTP header cannot carry (a control character,
// ESC, DEL) could never be sent: every call would fail in the HTTP client.
// `config check` refuses it, from a file or a variable, naming the byte and
// where it is but not the token, and so does run's start-up.
func TestCheckRefusesATokenAHeaderCannotCarry(t *testing.T) {
	dir := t.TempDir()
	bad := []struct{ value, named string }{
		{"S3CR3T\x01V4LU3", "control byte 0x01 at offset 6"},
		{"S3CR3T\x1bV4LU3", "ESC (0x1b) at offset 6"},
		{"S3CR3T\x7fV4LU3", "DEL (0x7f) at offset 6"},
	}
	var y strings.Builder
	y.WriteString("routes:\n")
	var want []string
	var tokens []config.Token
	for i, b := range bad {
		path := filepath.Join(dir, fmt.Sprintf("token%d", i))
		if err := os.WriteFile(path, []byte(b.value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env := fmt.Sprintf("AGENTRELAY_TEST_CTL_%d", i)
		t.Setenv(env, b.value)
		fmt.Fprintf(&y, "  - {name: f%d, stream: EVENTS, trigger_id: agtch_f%d, token: {file: %q}}\n", i, i, path)
		fmt.Fprintf(&y, "  - {name: e%d, stream: EVENTS, trigger_id: agtch_e%d, token: {env: %s}}\n", i, i, env)
		want = append(want,
			fmt.Sprintf("routes[%d].token.file: %s: byte not allowed in an HTTP header field value: %s", 2*i, path, b.named),
			fmt.Sprintf("routes[%d].token.env: environment variable %s: byte not allowed in an HTTP header field value: %s", 2*i+1, env, b.named))
		tokens = append(tokens, config.Token{File: path}, config.Token{Env: env})
	}

	_, err := config.Check(strings.NewReader(y.String()), os.LookupEnv)
	if err == nil {
		t.Fatal("config check passed tokens with control characters")
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "S3CR3T") || strings.Contains(msg, "V4LU3") {
		t.Errorf("the token leaked:\n%s", msg)
	}
	for _, tok := range tokens {
		if _, err := app.TokenSource(tok); err == nil {
			t.Errorf("run's start-up accepts %+v", tok)
		}
	}
}
