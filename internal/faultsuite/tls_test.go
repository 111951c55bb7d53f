package faultsuite

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/agentapi/emulator"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/app"
	"github.com/agentrelay/agentrelay/internal/natsconn"
)

// TLS verification cannot be turned off by accident: the API client and
// the NATS connection verify certificates unless insecure_skip_verify is set
// explicitly, and that is logged as a warning every time. These run the
// worker's own wiring (app.BuildRoutes, natsconn.TLSConfig) against an
// HTTPS emulator with a certificate nobody trusts by default.

// tlsAPI serves the emulator over HTTPS with httptest's self-signed
// certificate and returns its URL and that certificate as a PEM file.
func tlsAPI(t *testing.T) (*emulator.Emulator, string, string) {
	t.Helper()
	emu := emulator.New(emulator.WithToken("tls-secret-token", "*"), emulator.WithTrigger("agtch_tls", true))
	srv := httptest.NewTLSServer(emu)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return emu, srv.URL, caFile
}

// triggerThrough builds the worker's routes from a configuration (as `run`
// does) and sends one event through the route's agent. It returns the
// error and the warnings logged while building.
func triggerThrough(t *testing.T, baseURL string, tlsc config.TLS) ([]string, error) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tls-secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		API: config.API{BaseURL: baseURL, TLS: tlsc},
		Routes: []config.Route{{
			Name: "tls", Stream: "EVENTS", TriggerID: "agtch_tls", Token: config.Token{File: tokenFile},
		}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, routes, err := app.BuildRoutes(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	_, err = routes[0].Agent.Trigger(context.Background(), agentapi.Event{Input: "x"}) // no key: every call is new
	var warnings []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l != "" {
			warnings = append(warnings, l)
		}
	}
	return warnings, err
}

func TestAPICertificatesAreVerifiedUnlessExplicitlyNot(t *testing.T) {
	emu, url, caFile := tlsAPI(t)
	otherCA := selfSignedCA(t)
	rows := []struct {
		name     string
		tls      config.TLS
		accepted bool
		warns    bool
	}{
		{"no TLS settings: system roots, verified", config.TLS{}, false, false},
		{"a server name alone does not turn verification off", config.TLS{ServerName: "example.com"}, false, false},
		{"a server name that does not match the certificate", config.TLS{CAFile: caFile, ServerName: "api.chatgpt.com"}, false, false},
		{"the server's CA", config.TLS{CAFile: caFile}, true, false},
		{"the server's CA and its name", config.TLS{CAFile: caFile, ServerName: "example.com"}, true, false},
		{"explicit insecure_skip_verify, and a warning", config.TLS{InsecureSkipVerify: true}, true, true},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			before := emu.LedgerLen()
			warnings, err := triggerThrough(t, url, r.tls)
			if (err == nil) != r.accepted {
				t.Errorf("accepted=%v (err %v), want %v", err == nil, err, r.accepted)
			}
			if err != nil && agentapi.ClassOfError(err) != agentapi.ClassNetwork {
				t.Errorf("a failed handshake is class %s, want network (retried, never dead-lettered)", agentapi.ClassOfError(err))
			}
			if got := emu.LedgerLen() - before; got != map[bool]int{true: 1, false: 0}[r.accepted] {
				t.Errorf("%d events reached the API", got)
			}
			warned := len(warnings) > 0 && strings.Contains(strings.Join(warnings, "\n"), "insecure_skip_verify")
			if warned != r.warns {
				t.Errorf("warnings %q, want an insecure_skip_verify warning: %v", warnings, r.warns)
			}
			if strings.Contains(strings.Join(warnings, "\n")+errString(err), "tls-secret-token") {
				t.Error("the token is in a warning or an error")
			}
		})
	}
	if _, err := triggerThrough(t, url, config.TLS{CAFile: otherCA}); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
}

// selfSignedCA writes a CA certificate of its own (not the one httptest
// serves with) to a PEM file.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "faultsuite other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The NATS connection's TLS: every combination of settings without the
// explicit flag keeps verification on and logs nothing; the flag turns it
// off and says so, loudly, each time.
func TestNATSTLSVerificationIsOnUnlessExplicitlyOff(t *testing.T) {
	_, _, caFile := tlsAPI(t)
	for _, tc := range []config.TLS{
		{CAFile: caFile}, {ServerName: "nats.internal"}, {CAFile: caFile, ServerName: "nats.internal"},
	} {
		var logs bytes.Buffer
		c, err := natsconn.TLSConfig(tc, slog.New(slog.NewTextHandler(&logs, nil)), "nats")
		if err != nil {
			t.Fatal(err)
		}
		if c.InsecureSkipVerify || logs.Len() != 0 {
			t.Errorf("%+v: InsecureSkipVerify=%v, logged %q", tc, c.InsecureSkipVerify, logs.String())
		}
	}
	var logs bytes.Buffer
	c, err := natsconn.TLSConfig(config.TLS{InsecureSkipVerify: true}, slog.New(slog.NewTextHandler(&logs, nil)), "nats")
	if err != nil {
		t.Fatal(err)
	}
	if !c.InsecureSkipVerify || !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "insecure_skip_verify") {
		t.Errorf("explicit insecure_skip_verify: InsecureSkipVerify=%v, logged %q", c.InsecureSkipVerify, logs.String())
	}
	// And the NATS options carry the verifying configuration.
	opts, err := natsconn.Options(config.NATS{URL: "tls://127.0.0.1:1", TLS: config.TLS{CAFile: caFile}, ConnectTimeout: 1, ReconnectWait: 1}, nil, natsconn.Hooks{})
	if err != nil || len(opts) == 0 {
		t.Fatalf("options: %v", err)
	}
}
