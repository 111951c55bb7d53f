package agentapi

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// ErrNoToken is returned when a token source has no usable token.
var ErrNoToken = errors.New("agentapi: no access token")

// maxTokenFileSize bounds what a token file read may allocate; a token is a
// few hundred bytes, so anything larger is a misconfiguration.
const maxTokenFileSize = 64 << 10

// TokenSource gives the bearer token for a request. Implementations must be
// safe for concurrent use and cheap on the hot path: Token is called once
// per trigger request.
type TokenSource interface {
	Token() (Secret, error)
}

// Invalidator is implemented by token sources that can refresh early. The
// client calls Invalidate after a 401 so that a rotated token is picked up on
// the next request rather than after the refresh interval.
type Invalidator interface {
	Invalidate()
}

// StaticToken is a TokenSource that always returns the same token. A token
// that cannot be sent as a header (see CheckHeaderValue) is an error on
// every call.
type StaticToken Secret

// Token implements TokenSource.
func (s StaticToken) Token() (Secret, error) {
	if Secret(s).IsZero() {
		return Secret{}, ErrNoToken
	}
	if err := CheckHeaderValue(Secret(s).Reveal()); err != nil {
		return Secret{}, fmt.Errorf("%w: static token: %w", ErrNoToken, err)
	}
	return Secret(s), nil
}

// EnvToken reads the token from an environment variable once. Environment
// variables cannot change under a running process, so there is nothing to
// refresh; use a FileToken where rotation without restart matters.
func EnvToken(name string) (StaticToken, error) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return StaticToken{}, fmt.Errorf("%w: environment variable %s is empty or unset", ErrNoToken, name)
	}
	if err := CheckHeaderValue(v); err != nil {
		return StaticToken{}, fmt.Errorf("%w: environment variable %s: %w", ErrNoToken, name, err)
	}
	return StaticToken(NewSecret(v)), nil
}

// DefaultTokenRefresh is how often a FileToken re-reads its file.
const DefaultTokenRefresh = time.Second

// FileToken reads the token from a file and re-reads it when it may have
// changed, so a rotated secret (for example a Kubernetes Secret mounted as a
// file, which is swapped atomically through a symlink) takes effect without a
// restart. The file is re-read at most once per refresh interval, and at once
// after Invalidate. Surrounding whitespace, including the trailing newline
// most tools write, is ignored.
//
// A re-read that fails (the file is gone, empty, or holds a byte a header
// cannot carry) is an error from Token until a later re-read succeeds, as
// at start-up: the value read is never returned, and the last good token
// stays the reference for reporting a rotation.
type FileToken struct {
	path     string
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	token    Secret
	err      error
	readAt   time.Time
	mustRead bool
	good     Secret // the last token read without error
	onChange func()
}

// NewFileToken returns a FileToken for path, reading it once to fail fast on a
// missing or empty file. A refresh interval <= 0 means DefaultTokenRefresh.
func NewFileToken(path string, refresh time.Duration) (*FileToken, error) {
	if refresh <= 0 {
		refresh = DefaultTokenRefresh
	}
	f := &FileToken{path: path, interval: refresh, now: time.Now, mustRead: true}
	if _, err := f.Token(); err != nil {
		return nil, err
	}
	return f, nil
}

// Token implements TokenSource.
func (f *FileToken) Token() (Secret, error) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mustRead || now.Sub(f.readAt) >= f.interval {
		f.token, f.err = readTokenFile(f.path)
		f.readAt, f.mustRead = now, false
		if f.err == nil {
			if !f.good.IsZero() && f.good != f.token && f.onChange != nil {
				f.onChange()
			}
			f.good = f.token
		}
	}
	return f.token, f.err
}

// OnChange has fn called whenever a re-read finds a token other than the
// last one read: a rotation picked up (the worker counts these in
// agentrelay_token_reloads_total). fn runs under the source's lock, on the
// request path: keep it short, and never call the source from it.
func (f *FileToken) OnChange(fn func()) {
	f.mu.Lock()
	f.onChange = fn
	f.mu.Unlock()
}

// Invalidate implements Invalidator: the next Token call re-reads the file.
func (f *FileToken) Invalidate() {
	f.mu.Lock()
	f.mustRead = true
	f.mu.Unlock()
}

func readTokenFile(path string) (Secret, error) {
	fh, err := os.Open(path)
	if err != nil {
		// The *PathError names the file, never its content.
		return Secret{}, fmt.Errorf("%w: %v", ErrNoToken, err)
	}
	defer fh.Close()
	buf, err := io.ReadAll(io.LimitReader(fh, maxTokenFileSize+1))
	if err != nil {
		return Secret{}, fmt.Errorf("%w: reading %s: %v", ErrNoToken, path, err)
	}
	if len(buf) > maxTokenFileSize {
		return Secret{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrNoToken, path, maxTokenFileSize)
	}
	v := strings.TrimSpace(string(buf))
	if v == "" {
		return Secret{}, fmt.Errorf("%w: %s is empty", ErrNoToken, path)
	}
	if err := CheckHeaderValue(v); err != nil {
		// net/http would refuse every request that carries it, and the
		// failure would look like the network's.
		return Secret{}, fmt.Errorf("%w: %s: %w", ErrNoToken, path, err)
	}
	return NewSecret(v), nil
}
