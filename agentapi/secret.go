package agentapi

import "log/slog"

// redacted is what a Secret shows wherever it is printed, logged or encoded.
const redacted = "[REDACTED]"

// Secret holds a bearer token. It prints, logs and marshals as "[REDACTED]"
// so that a token cannot leak through a log line, an error string or a
// metric label by accident; only Reveal gives the value, and only the
// client's request builder calls it.
type Secret struct{ v string }

// NewSecret wraps a token.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the token itself.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// String implements fmt.Stringer (used by %v, %s, %q, %x).
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer (used by %#v).
func (s Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (used by JSON and YAML encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
