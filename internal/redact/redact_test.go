package redact

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// The user info and the query of every URL in a text are hidden, whether
// url.Parse can read the URL or not, quoted or bare, alone or in a list.
func TestRedactURLsHidesUserInfoAndQuery(t *testing.T) {
	for _, r := range []struct{ in, want string }{
		{"ftp://user:SECRETPW1@host", "ftp://REDACTED@host"},
		{"https://api.example.com/v1?token=SECRETQ2", "https://api.example.com/v1?REDACTED"},
		{"nats://user:SEC%zzRETN7@host:4222", "nats://REDACTED@host:4222"},
		{`parse "nats://user:SEC%zzRETN7@host:4222": invalid URL escape "%zz"`, `parse "nats://REDACTED@host:4222": invalid URL escape "%zz"`},
		{`base URL "https://u:SECRETPW3@h/x?k=SECRETQ4#SECRETF5": bad`, `base URL "https://REDACTED@h/x?REDACTED": bad`},
		{"nats://a:SECRET6@h1:4222,nats://b:SECRET7@h2:4222", "nats://REDACTED@h1:4222,nats://REDACTED@h2:4222"},
		{`"nats://u:pass SECRET8@h"`, `"nats://REDACTED@h"`},
		{`"nats://u:pa\"SECRET9@h" is bad`, `"nats://REDACTED@h" is bad`},
		{"nats://u:pa/ss#SECRET10@h", "nats://REDACTED@h"},
		{"ws://u:p@SECRET11@h/p", "ws://REDACTED@h/p"},
		{"connect to <tls://u:SECRET12@h> failed", "connect to <tls://REDACTED@h> failed"},
		{"x=nats://u:SECRET13@h,y", "x=nats://REDACTED@h,y"},
		{"https://host/path and more", "https://host/path and more"},
		{"no url here: user:pw@host", "no url here: user:pw@host"},
		{"://u:pw@host", "://u:pw@host"},
		{"1nats://u:SECRET14@h", "1nats://REDACTED@h"},
		{"", ""},
	} {
		got := URLs(r.in)
		if got != r.want {
			t.Errorf("URLs(%q)\n got %q\nwant %q", r.in, got, r.want)
		}
		if strings.Contains(got, "SECRET") {
			t.Errorf("URLs(%q) leaks: %q", r.in, got)
		}
	}
}

// Whatever the password and the query hold, none of them survives, in the
// URL as it is or quoted into an error by url.Parse or %q.
func FuzzURLs(f *testing.F) {
	for _, s := range []struct{ scheme, pw, query string }{
		{"nats", "p%zz", ""}, {"https", "a b", "token=x"}, {"ftp", `q"uote`, ""}, {"wss", "a,nats://b", ""},
		{"tls", "p/w#x?y", "a=b"}, {"http", "@@", "x@y"},
	} {
		f.Add(s.scheme, s.pw, s.query)
	}
	f.Fuzz(func(t *testing.T, scheme, pw, query string) {
		if !startsURL(scheme+"://") || len(pw) < 6 || strings.ContainsAny(pw, "\x00\r\n\t \"'`<>,@") || strings.Contains(pw, "://") {
			return
		}
		raw := scheme + "://user:" + pw + "@host/p"
		if query != "" {
			raw += "?" + query
		}
		_, perr := url.Parse(raw)
		for _, text := range []string{raw, fmt.Sprintf("%q: bad", raw), fmt.Sprintf("nats.url: %v", perr), "x " + raw + " y"} {
			got := URLs(text)
			if strings.Contains(got, pw) {
				t.Errorf("URLs(%q) = %q shows the password", text, got)
			}
			if len(query) >= 6 && strings.Contains(got, "?"+query) {
				t.Errorf("URLs(%q) = %q shows the query", text, got)
			}
		}
	})
}

func TestRedactURLsDoesNotAllocateForPlainText(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { URLs("retrying trigger call for route complaints") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
