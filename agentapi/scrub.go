package agentapi

import (
	"encoding/base64"
	"encoding/hex"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A scrubber removes the bearer token from text the server sent back. Error
// bodies, reason phrases and transport errors end up in logs, dead-letter
// headers and `dlq show`; a proxy or debugging gateway that echoes the
// request would otherwise put the token there, and rarely byte for byte: it
// may lower-case it, JSON-escape it (\u0053...), URL-encode it, base64 it
// (a Basic header, a dump), or wrap it across lines.
//
// The scrubber looks for the token in every such form: each text is read
// raw, with one layer of escapes decoded and with two (a URL-encoded JSON
// escape); whitespace, line breaks and invisible characters are skipped and
// case is ignored. The needles are the token itself, its base64 (standard
// and URL alphabets, at each of the three byte alignments a longer encoded
// text can put it in) and its hex. A match is redacted in the original text,
// across whatever it spanned there.
type scrubber struct {
	needles []string // folded: lower case, no whitespace
}

// minNeedle is the shortest derived form (base64, hex) looked for: shorter
// ones would match ordinary words. The token itself is always looked for.
const minNeedle = 6

func newScrubber(tok Secret) *scrubber {
	t := tok.Reveal()
	sc := &scrubber{}
	if t == "" {
		return sc
	}
	add := func(s string, always bool) {
		f := foldString(s)
		if f == "" || !always && len(f) < minNeedle {
			return
		}
		for _, n := range sc.needles {
			if n == f {
				return
			}
		}
		sc.needles = append(sc.needles, f)
	}
	add(t, true)
	add(hex.EncodeToString([]byte(t)), false)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for shift := range 3 {
			add(base64Inner(enc, t, shift), false)
		}
	}
	return sc
}

// base64Inner returns the base64 characters that encode only bits of t when
// t starts shift bytes into the encoded data: the part of its encoding that
// is the same whatever surrounds it.
func base64Inner(enc *base64.Encoding, t string, shift int) string {
	buf := make([]byte, shift+len(t))
	copy(buf[shift:], t)
	e := enc.EncodeToString(buf)
	first := (8*shift + 5) / 6       // first character wholly inside t
	last := 8 * (shift + len(t)) / 6 // end of the last character wholly inside t
	if first >= last {
		return ""
	}
	return e[first:last]
}

// scrub returns text with every form of the token replaced by [REDACTED].
// Scrub whole texts, then cut them: a token straddling a cut made first
// would leave its first part behind, unrecognised.
func (sc *scrubber) scrub(text string) string {
	if len(sc.needles) == 0 || text == "" {
		return text
	}
	var spans [][2]int
	raw := rawUnits(text)
	once := decodeUnits(raw)
	for _, us := range [][]unit{raw, once, decodeUnits(once)} {
		spans = sc.find(fold(us), spans)
	}
	if len(spans) == 0 {
		return text
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var sb strings.Builder
	at := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		sb.WriteString(text[at:start])
		sb.WriteString(redacted)
		at = end
	}
	sb.WriteString(text[at:])
	return sb.String()
}

// find appends to spans the original byte ranges of every needle in us.
func (sc *scrubber) find(us []unit, spans [][2]int) [][2]int {
	if len(us) == 0 {
		return spans
	}
	// The folded text as a string, and where each unit starts in it.
	var sb strings.Builder
	offs := make([]int, len(us))
	for i, u := range us {
		offs[i] = sb.Len()
		sb.WriteRune(u.r)
	}
	s := sb.String()
	unitAt := func(off int) int { return sort.SearchInts(offs, off) }
	for _, n := range sc.needles {
		for from := 0; from < len(s); {
			k := strings.Index(s[from:], n)
			if k < 0 {
				break
			}
			first, last := unitAt(from+k), unitAt(from+k+len(n))-1
			spans = append(spans, [2]int{us[first].start, us[last].end})
			from += k + len(n)
		}
	}
	return spans
}

// A unit is one character of a text as the scrubber reads it, and the
// bytes [start, end) of the original text it stands for: an escape
// sequence decodes to one unit spanning the whole sequence.
type unit struct {
	r          rune
	start, end int
}

// rawUnits reads text character by character. An invalid byte is a unit of
// its own, with rune -1.
func rawUnits(text string) []unit {
	us := make([]unit, 0, len(text))
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && size == 1 {
			r = -1
		}
		us = append(us, unit{r, i, i + size})
		i += size
	}
	return us
}

// decodeUnits decodes one layer of the escapes an echo may wrap a token in:
// JSON and Go escapes (\uXXXX, \UXXXXXXXX, \xXX, \/, \\, \", and \n \r \t,
// which are whitespace) and URL percent-encoding (%XX, query or path).
func decodeUnits(in []unit) []unit {
	out := make([]unit, 0, len(in))
	for i := 0; i < len(in); {
		u := in[i]
		switch u.r {
		case '\\':
			if i+1 >= len(in) {
				break
			}
			switch in[i+1].r {
			case 'u':
				if r, ok := hexUnits(in, i+2, 4); ok {
					out = append(out, unit{r, u.start, in[i+5].end})
					i += 6
					continue
				}
			case 'U':
				if r, ok := hexUnits(in, i+2, 8); ok {
					out = append(out, unit{r, u.start, in[i+9].end})
					i += 10
					continue
				}
			case 'x':
				if r, ok := hexUnits(in, i+2, 2); ok {
					out = append(out, unit{r, u.start, in[i+3].end})
					i += 4
					continue
				}
			case 'n', 'r', 't':
				out = append(out, unit{' ', u.start, in[i+1].end})
				i += 2
				continue
			case '/', '\\', '"':
				out = append(out, unit{in[i+1].r, u.start, in[i+1].end})
				i += 2
				continue
			}
		case '%':
			if r, ok := hexUnits(in, i+1, 2); ok {
				out = append(out, unit{r, u.start, in[i+2].end})
				i += 3
				continue
			}
		}
		out = append(out, u)
		i++
	}
	return out
}

// hexUnits reads n hex digits from in at i.
func hexUnits(in []unit, i, n int) (rune, bool) {
	if i+n > len(in) {
		return 0, false
	}
	var v rune
	for _, u := range in[i : i+n] {
		d, ok := hexDigit(u.r)
		if !ok {
			return 0, false
		}
		v = v<<4 | d
	}
	return v, v <= unicode.MaxRune
}

func hexDigit(r rune) (rune, bool) {
	switch {
	case r >= '0' && r <= '9':
		return r - '0', true
	case r >= 'a' && r <= 'f':
		return r - 'a' + 10, true
	case r >= 'A' && r <= 'F':
		return r - 'A' + 10, true
	}
	return 0, false
}

// fold drops what a split or a disguise may insert and lower-cases the
// rest. Dropped are whitespace and line breaks, and everything sanitize
// would escape (controls, invisible and bidi characters, invalid bytes),
// and U+FFFD, which a decoder writes for an invalid byte: a token split by
// one of those would otherwise be shown whole, the splitter written as an
// escape in its middle.
func fold(in []unit) []unit {
	out := make([]unit, 0, len(in))
	for _, u := range in {
		if u.r < 0 || u.r > unicode.MaxRune || u.r == utf8.RuneError || unicode.IsSpace(u.r) || !printable(u.r) {
			continue
		}
		u.r = unicode.ToLower(u.r)
		out = append(out, u)
	}
	return out
}

// foldString folds a needle the way fold folds a text.
func foldString(s string) string {
	var sb strings.Builder
	for _, u := range fold(rawUnits(s)) {
		sb.WriteRune(u.r)
	}
	return sb.String()
}
