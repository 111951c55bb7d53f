package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/config"
)

// TLS verification is turned off only by saying so: insecure_skip_verify
// set to true (or a YAML 1.1 "yes"/"on"/"y", which the YAML library reads
// as true: still an explicit yes, and still logged as a warning at start).
// A number, a quoted string, a misspelt key or an environment variable does
// not do it by accident: each is an error, or changes nothing.
func TestInsecureSkipVerifyOnlyByExplicitTrue(t *testing.T) {
	for _, section := range []string{"api", "nats"} {
		for v, want := range map[string]any{
			"true": true, "True": true, "yes": true, "on": true, "y": true,
			"false": false, "no": false, "off": false, "n": false,
			"1": "error", "0": "error", `"true"`: "error", "enable": "error", "[true]": "error", "{}": "error",
		} {
			c, err := read(t, section+":\n  tls: {insecure_skip_verify: "+v+"}\n"+minimal, nil)
			var ce *config.Error
			switch {
			case want == "error" && !errors.As(err, &ce):
				t.Errorf("%s.tls.insecure_skip_verify: %s accepted", section, v)
			case want != "error" && err != nil:
				t.Errorf("%s.tls.insecure_skip_verify: %s: %v", section, v, err)
			case want != "error":
				got := map[string]config.TLS{"api": c.API.TLS, "nats": c.NATS.TLS}[section].InsecureSkipVerify
				if got != want {
					t.Errorf("%s.tls.insecure_skip_verify: %s read as %v", section, v, got)
				}
			}
		}
		for _, typo := range []string{"insecure_skip_verfy", "insecureSkipVerify", "skip_verify", "insecure"} {
			_, err := read(t, section+":\n  tls: {"+typo+": true}\n"+minimal, nil)
			if err == nil || !strings.Contains(err.Error(), typo) {
				t.Errorf("%s.tls.%s: %v, want an unknown-field error naming it", section, typo, err)
			}
		}
		c, err := read(t, section+":\n  tls: {insecure_skip_verify: true}\n"+minimal, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tls := map[string]config.TLS{"api": c.API.TLS, "nats": c.NATS.TLS}[section]; !tls.InsecureSkipVerify || !tls.Enabled() {
			t.Errorf("%s: the explicit setting was lost: %+v", section, tls)
		}
	}
	// No environment variable reaches TLS settings, or allows plain http.
	c, err := read(t, minimal, map[string]string{
		"AGENTRELAY_INSECURE_SKIP_VERIFY": "true", "AGENTRELAY_API_TLS_INSECURE_SKIP_VERIFY": "true", "AGENTRELAY_ALLOW_INSECURE_HTTP": "true",
	})
	if err != nil || c.API.TLS.InsecureSkipVerify || c.NATS.TLS.InsecureSkipVerify || c.API.AllowInsecureHTTP {
		t.Errorf("environment changed TLS settings: %+v %+v (%v)", c.API.TLS, c.NATS.TLS, err)
	}
	_, err = read(t, minimal, map[string]string{"AGENTRELAY_API_BASE_URL": "http://api.example.com"})
	if err == nil || !strings.Contains(err.Error(), "api.base_url") {
		t.Errorf("a plain-http API URL from the environment: %v", err)
	}
}

// A trigger id that could redirect a request never gets past the
// configuration, and the error quotes it escaped and bounded.
func TestHostileTriggerIDsAreRefusedAtLoad(t *testing.T) {
	for _, id := range []string{
		"agtch_a/b", "agtch_../../admin", "agtch_a%2Fb", "agtch_a?x=1", "agtch_a#f", "agtch_a b", "agtch_a\\u0000",
		"agtch_\\u001b[2J", "agtch_ａ", "agtch_a\\r\\nHost: evil", "agtch_" + strings.Repeat("x", 500), "../agtch_a",
	} {
		_, err := read(t, strings.Replace(minimal, "agtch_complaints_123", `"`+id+`"`, 1), nil)
		if err == nil || !strings.Contains(err.Error(), "routes[0].trigger_id") {
			t.Errorf("trigger id %q: %v", id, err)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x00\x1b\r") || len(err.Error()) > 400 {
			t.Errorf("trigger id %q: error unbounded or with raw control bytes: %q", id, err)
		}
	}
}
