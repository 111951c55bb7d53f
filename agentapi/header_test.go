package agentapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
)

// CheckHeaderValue refuses exactly the bytes net/http refuses to send in a
// header value: every byte is tried in a real request to the emulator.
func TestCheckHeaderValueIsTheRuleNetHTTPApplies(t *testing.T) {
	emu, _ := emulated(t)
	url := emuURL(t, emu)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	for b := 0; b < 256; b++ {
		v := "tok" + string([]byte{byte(b)}) + "en"
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/v1/workspace_agents/"+triggerID+"/trigger", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Probe", v)
		resp, sendErr := tr.RoundTrip(req)
		if sendErr == nil {
			_ = resp.Body.Close()
		}
		checkErr := agentapi.CheckHeaderValue(v)
		if (sendErr != nil) != (checkErr != nil) {
			t.Errorf("byte 0x%02x: net/http says %v, CheckHeaderValue says %v", b, sendErr, checkErr)
		}
		if checkErr != nil && (!errors.Is(checkErr, agentapi.ErrHeaderValue) ||
			!strings.Contains(checkErr.Error(), fmt.Sprintf("0x%02x", b)) || !strings.Contains(checkErr.Error(), "at offset 3")) {
			t.Errorf("byte 0x%02x: %v names neither the byte nor where it is", b, checkErr)
		}
	}
}

func TestCheckHeaderValueNamesTheBytesNeverTheValue(t *testing.T) {
	for v, want := range map[string]string{
		"a\x1bb":             "byte not allowed in an HTTP header field value: ESC (0x1b) at offset 1",
		"\x01\x02\x03\x04de": "control byte 0x01 at offset 0, control byte 0x02 at offset 1, control byte 0x03 at offset 2 and 1 more",
		"line\r\nbreak":      "carriage return (0x0d) at offset 4, line feed (0x0a) at offset 5",
		"del\x7f\x00":        "DEL (0x7f) at offset 3, NUL (0x00) at offset 4",
	} {
		err := agentapi.CheckHeaderValue(v)
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("%q: %v, want ...%s", v, err, want)
		}
	}
	for _, v := range []string{"tok-3f9c1a", "with space and\ttab", "obs-text \x80\xff", "Bearer a.b/c+d=", ""} {
		if err := agentapi.CheckHeaderValue(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
}

// Every token source refuses a token that holds a byte a header cannot
// carry, and says which byte, not what the token is.
func TestTokenSourcesRefuseATokenAHeaderCannotCarry(t *testing.T) {
	const secret = "S3CR3T\x1bV4LU3"
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, fileErr := agentapi.NewFileToken(path, 0)
	t.Setenv("AGENTRELAY_TEST_TOKEN", secret)
	_, envErr := agentapi.EnvToken("AGENTRELAY_TEST_TOKEN")
	_, staticErr := agentapi.StaticToken(agentapi.NewSecret(secret)).Token()
	for source, err := range map[string]error{"file": fileErr, "env": envErr, "static": staticErr} {
		if !errors.Is(err, agentapi.ErrNoToken) || !errors.Is(err, agentapi.ErrHeaderValue) {
			t.Errorf("%s: want ErrNoToken and ErrHeaderValue, got %v", source, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "ESC (0x1b) at offset 6") || strings.Contains(msg, "S3CR3T") || strings.Contains(msg, "V4LU3") {
			t.Errorf("%s: %q should name the byte and hide the token", source, msg)
		}
	}
	if fileErr == nil || envErr == nil {
		return
	}
	if !strings.Contains(fileErr.Error(), path) || !strings.Contains(envErr.Error(), "AGENTRELAY_TEST_TOKEN") {
		t.Errorf("the errors should say where the token came from: %v; %v", fileErr, envErr)
	}
}

// A token file rotated to a value a header cannot carry is never sent: the
// route gets the token error (ClassUnauthorized, as for a missing file),
// the API sees nothing, the last good token is not forgotten (going back to
// it is no rotation), and a good value is picked up again.
func TestFileTokenRotatedToAnUnsendableValueIsNotUsed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	write := func(v string) {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(token + "\n")
	ft, err := agentapi.NewFileToken(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	rotations := 0
	ft.OnChange(func() { rotations++ })
	emu, _ := emulated(t)
	a := agent(t, emuURL(t, emu), ft, agentapi.ClientOptions{})
	trigger := func(input string) error {
		_, err := a.Trigger(context.Background(), agentapi.Event{Input: input, IdempotencyKey: input})
		return err
	}
	if err := trigger("before"); err != nil {
		t.Fatal(err)
	}

	write(token + "\x7f\n")
	ft.Invalidate()
	if s, err := ft.Token(); !s.IsZero() || !errors.Is(err, agentapi.ErrHeaderValue) {
		t.Fatalf("after a bad rotation Token gave a token (%v) or the wrong error: %v", !s.IsZero(), err)
	}
	sent := len(emu.Requests())
	err = trigger("during")
	if agentapi.ClassOfError(err) != agentapi.ClassUnauthorized || !errors.Is(err, agentapi.ErrHeaderValue) {
		t.Fatalf("a call with the bad token: want ClassUnauthorized wrapping ErrHeaderValue, got %v", err)
	}
	if n := len(emu.Requests()); n != sent {
		t.Fatalf("%d requests reached the API with the bad token", n-sent)
	}

	write(token + "\n")
	ft.Invalidate()
	if err := trigger("after"); err != nil {
		t.Fatalf("the good token back: %v", err)
	}
	if rotations != 0 {
		t.Errorf("%d rotations reported; going back to the last good token is none", rotations)
	}
	write("tok-new\n")
	ft.Invalidate()
	if _, err := ft.Token(); err != nil || rotations != 1 {
		t.Errorf("a real rotation: err %v, %d rotations reported, want 1", err, rotations)
	}
}

// unchecked hands out whatever token it holds, as a TokenSource written
// elsewhere might, and counts Invalidate calls.
type unchecked struct {
	secret      agentapi.Secret
	invalidated atomic.Int32
}

func (u *unchecked) Token() (agentapi.Secret, error) { return u.secret, nil }
func (u *unchecked) Invalidate()                     { u.invalidated.Add(1) }

// A header the HTTP client would refuse is a token problem, as a 401 is
// (the route stops and nothing is dead-lettered), not a network failure
// that burns every event's retries. Nothing is sent, the error names the
// byte and not the token, and the source is asked to re-read.
func TestATokenTheHTTPClientRefusesIsUnauthorized(t *testing.T) {
	emu, _ := emulated(t, emulator.WithToken("tok-good", triggerID))
	url := emuURL(t, emu)
	for _, b := range []byte{0x01, 0x1b, 0x7f, '\n', '\r', 0x00} {
		src := &unchecked{secret: agentapi.NewSecret("tok-" + string([]byte{b}) + "SECRET")}
		a := agent(t, url, src, agentapi.ClientOptions{})
		sent := len(emu.Requests())
		code, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "k1"})
		var e *agentapi.Error
		if !errors.As(err, &e) || e.Class != agentapi.ClassUnauthorized || code != 0 {
			t.Errorf("byte 0x%02x: want ClassUnauthorized and no status, got %d %v", b, code, err)
			continue
		}
		if !errors.Is(err, agentapi.ErrHeaderValue) || !errors.Is(err, agentapi.ErrNoToken) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("byte 0x%02x: %q", b, err)
		}
		if n := len(emu.Requests()); n != sent {
			t.Errorf("byte 0x%02x: %d requests reached the API", b, n-sent)
		}
		if src.invalidated.Load() == 0 {
			t.Errorf("byte 0x%02x: the source was not asked to re-read", b)
		}
		// The same agent sends again once the source has a good token.
		src.secret = agentapi.NewSecret("tok-good")
		if _, err := a.Trigger(context.Background(), agentapi.Event{Input: "x", IdempotencyKey: "k1"}); err != nil {
			t.Errorf("byte 0x%02x: after the fix: %v", b, err)
		}
	}
}
