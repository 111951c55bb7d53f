// Package redact hides credentials in text: the user info and the query of
// every URL. It depends on nothing but the standard library, so that the
// configuration package and the logger can share it.
package redact

import "strings"

// Redacted replaces the user info and the query of a URL that URLs
// finds in a text.
const Redacted = "REDACTED"

// URLs returns s with the user info (user:password@) and the query
// (with any fragment) of every URL in it replaced by REDACTED:
// "ftp://user:pw@host/x?token=t" becomes "ftp://REDACTED@host/x?REDACTED".
// Configuration errors and logs pass what they echo through it, so that a
// credential in a URL never reaches a terminal or a log collector.
//
// It works on the text, not through url.Parse, because the URLs that most
// need it are the ones url.Parse rejects (a password with a stray '%', '/'
// or '#'), and because they are often quoted inside an error message. A URL
// is a scheme followed by "://"; it ends at whitespace, a quote or '<', '>',
// or at a comma that starts the next URL of a list; a URL that follows a
// double quote ends at the closing quote only (Go's %q escapes the quotes in
// it), so a password with a space is still covered. Everything up to the
// last '@' of the URL is taken for user info: a URL that merely has an '@'
// in its path loses its host too, which is the price of never showing half
// a password. Text without "://" is returned as it is, without allocating.
func URLs(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	done := 0 // s[:done] is written (or is to be copied as it is)
	for from := 0; ; {
		i := strings.Index(s[from:], "://")
		if i < 0 {
			break
		}
		i += from
		start := schemeStart(s, done, i)
		if start < 0 {
			from = i + 3
			continue
		}
		quoted := start > 0 && s[start-1] == '"'
		end := urlEnd(s, i+3, quoted)
		b.WriteString(s[done : i+3])
		rest := s[i+3 : end]
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			b.WriteString(Redacted)
			rest = rest[at:]
		}
		if q := strings.IndexAny(rest, "?#"); q >= 0 {
			b.WriteString(rest[:q+1])
			b.WriteString(Redacted)
		} else {
			b.WriteString(rest)
		}
		done, from = end, end
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// schemeStart returns where the scheme ending at s[i] ("://" follows)
// starts, not before min, or -1 when there is none: a scheme is a letter
// followed by letters, digits, '+', '-' and '.'.
func schemeStart(s string, min, i int) int {
	k := i
	for k > min && isSchemeByte(s[k-1]) {
		k--
	}
	for k < i && !isLetter(s[k]) {
		k++
	}
	if k == i {
		return -1
	}
	return k
}

// urlEnd returns where the URL whose authority starts at s[i] ends.
func urlEnd(s string, i int, quoted bool) int {
	for j := i; j < len(s); j++ {
		switch c := s[j]; {
		case c == ',' && startsURL(s[j+1:]):
			return j
		case quoted:
			if c == '"' && s[j-1] != '\\' {
				return j
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>':
			return j
		}
	}
	return len(s)
}

// startsURL reports whether s starts with a scheme and "://".
func startsURL(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	i := 1
	for i < len(s) && isSchemeByte(s[i]) {
		i++
	}
	return strings.HasPrefix(s[i:], "://")
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isSchemeByte(c byte) bool {
	return isLetter(c) || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}
