// Package dockerfile reads the parts of a Dockerfile that the deploy tests
// check: build arguments, stages and their instructions. It is not a
// general parser; it handles what agentrelay's Dockerfile uses: comments and
// parser directives, backslash line continuations, instruction flags
// (--from=, --platform=, --mount=), the exec (JSON array) form, and shell
// words with quotes.
package dockerfile

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Instruction is one instruction, with its continuation lines joined.
type Instruction struct {
	Line  int      // where it starts, 1-based
	Cmd   string   // upper case: FROM, RUN, COPY, ...
	Flags []string // leading --name=value flags, as written
	Args  string   // the rest
}

// Flag returns the value of flag --name, if present.
func (in Instruction) Flag(name string) (string, bool) {
	for _, f := range in.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ExecForm returns the instruction's arguments written as a JSON array.
func (in Instruction) ExecForm() ([]string, bool) {
	var words []string
	if err := json.Unmarshal([]byte(in.Args), &words); err != nil {
		return nil, false
	}
	return words, true
}

// Stage is a build stage: FROM up to the next FROM.
type Stage struct {
	Name         string // the AS name, if any
	Base         string // the image, variables not expanded
	Platform     string // --platform
	Instructions []Instruction
}

// Find returns the stage's instructions with command cmd.
func (s Stage) Find(cmd string) []Instruction {
	var out []Instruction
	for _, in := range s.Instructions {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// File is a parsed Dockerfile.
type File struct {
	// GlobalArgs are the ARGs before the first FROM, with their defaults.
	GlobalArgs map[string]string
	Stages     []Stage
}

// Stage returns the stage named name.
func (f *File) Stage(name string) (Stage, bool) {
	for _, s := range f.Stages {
		if s.Name == name {
			return s, true
		}
	}
	return Stage{}, false
}

// Final returns the last stage: the image that is shipped.
func (f *File) Final() Stage { return f.Stages[len(f.Stages)-1] }

// Parse parses a Dockerfile.
func Parse(src string) (*File, error) {
	ins, err := instructions(src)
	if err != nil {
		return nil, err
	}
	f := &File{GlobalArgs: map[string]string{}}
	for _, in := range ins {
		if in.Cmd == "FROM" {
			st, err := fromStage(in)
			if err != nil {
				return nil, err
			}
			f.Stages = append(f.Stages, st)
			continue
		}
		if len(f.Stages) == 0 {
			if in.Cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			name, def, _ := strings.Cut(in.Args, "=")
			f.GlobalArgs[strings.TrimSpace(name)] = strings.TrimSpace(def)
			continue
		}
		last := &f.Stages[len(f.Stages)-1]
		last.Instructions = append(last.Instructions, in)
	}
	if len(f.Stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return f, nil
}

func fromStage(in Instruction) (Stage, error) {
	words := strings.Fields(in.Args)
	st := Stage{}
	st.Platform, _ = in.Flag("platform")
	switch {
	case len(words) == 1:
		st.Base = words[0]
	case len(words) == 3 && strings.EqualFold(words[1], "AS"):
		st.Base, st.Name = words[0], words[2]
	default:
		return Stage{}, fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", in.Line, in.Args)
	}
	return st, nil
}

var flag = regexp.MustCompile(`^--[a-z-]+=\S*$`)

// instructions splits src into instructions, joining continuation lines
// and dropping comments.
func instructions(src string) ([]Instruction, error) {
	var out []Instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(trimmed)
		in, err := instruction(start, cur.String())
		if err != nil {
			return nil, err
		}
		out = append(out, in)
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: continuation at the end of the file", start)
	}
	return out, nil
}

func instruction(line int, text string) (Instruction, error) {
	cmd, rest, _ := strings.Cut(text, " ")
	in := Instruction{Line: line, Cmd: strings.ToUpper(cmd)}
	rest = strings.TrimSpace(rest)
	for {
		word, after, _ := strings.Cut(rest, " ")
		if !flag.MatchString(word) {
			break
		}
		in.Flags = append(in.Flags, word)
		rest = strings.TrimSpace(after)
	}
	in.Args = rest
	if in.Args == "" {
		return Instruction{}, fmt.Errorf("line %d: %s without arguments", line, in.Cmd)
	}
	return in, nil
}

// Expand substitutes $NAME and ${NAME} from vars, as the shell and the
// Dockerfile ARG mechanism do; unknown names expand to "".
func Expand(s string, vars map[string]string) string {
	return os.Expand(s, func(name string) string { return vars[name] })
}

// ShellWords splits a shell command line into words, honouring single and
// double quotes and backslash escapes (no globbing, no substitutions).
func ShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
