package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without a worker (Main's w nil), the commands that run or vouch for the
// worker say so instead of doing half their job; the others check the
// file as far as they can.
func TestWithoutAWorker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(name, mapping string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(`
nats: {url: "nats://127.0.0.1:1"}
routes:
  - {name: r, stream: S, trigger_id: agtch_r, token: {file: `+tok+`}, map: {input: '`+mapping+`'}}
`), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, bad := file("good.yaml", `"x"`), file("bad.yaml", "nope")
	run := func(cfg string, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), nil, append([]string{"--config", cfg}, args...), strings.NewReader(""), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	for _, args := range [][]string{{"run"}, {"config", "check"}} {
		if code, out := run(good, args...); code != ExitError || !strings.Contains(out, ErrNoWorker.Error()) {
			t.Errorf("%v without a worker: exit %d\n%s", args, code, out)
		}
	}
	// A tool reads the file with the checks that need no worker: the
	// mapping that does not compile is reported at its path.
	if code, out := run(bad, "status", "--connect-timeout", "100ms"); code != ExitConfig || !strings.Contains(out, "routes[0].map.input: undeclared reference to 'nope'") {
		t.Errorf("status without a worker: exit %d\n%s", code, out)
	}
}
