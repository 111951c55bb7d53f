package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/agentrelay/agentrelay/agentapi"
)

// checkTokens reads every route's agent token the way `run` does before it
// starts (internal/app.TokenSource: agentapi.NewFileToken for a file,
// agentapi.EnvToken for an environment variable), so that `config check`
// refuses what run refuses: an unset or empty variable, a missing,
// unreadable, empty or oversized file, a token with a byte an HTTP header
// cannot carry (a line break, ESC, DEL or another control character;
// agentapi.CheckHeaderValue). It adds a problem for every route whose token
// cannot be had. Only the problems are reported, with the offending bytes
// named by value and offset, never a token.
//
// Read does not do this, Check does: commands other than run (dlq, status,
// pause) do not need the agent tokens and must work where they are absent.
func (c *Config) checkTokens(p *problems, lookupEnv func(string) (string, bool)) {
	for i, r := range c.Routes {
		path := fmt.Sprintf("routes[%d].token", i)
		switch t := r.Token; {
		case t.File != "" && t.Env == "" && t.Dir == "":
			if _, err := agentapi.NewFileToken(t.File, 0); err != nil {
				p.add(path+".file", "%s", tokenProblem(err))
			}
		case t.Env != "" && t.File == "" && t.Dir == "":
			if err := envToken(lookupEnv, t.Env); err != nil {
				p.add(path+".env", "%v", err)
			}
		case t.Dir != "" && t.File == "" && t.Env == "":
			if fi, err := os.Stat(t.Dir); err != nil {
				p.add(path+".dir", "%v", err)
			} else if !fi.IsDir() {
				p.add(path+".dir", "%s is not a directory", t.Dir)
			}
		}
		// None or several: Validate reports that.
		for j, at := range r.AgentTokens {
			ap := fmt.Sprintf("routes[%d].agent_tokens[%d]", i, j)
			switch {
			case at.File != "" && at.Env == "":
				if _, err := agentapi.NewFileToken(at.File, 0); err != nil {
					p.add(ap+".file", "%s", tokenProblem(err))
				}
			case at.Env != "" && at.File == "":
				if err := envToken(lookupEnv, at.Env); err != nil {
					p.add(ap+".env", "%v", err)
				}
			}
		}
	}
}

// envToken applies agentapi.EnvToken's rules to a variable looked up with
// lookupEnv (EnvToken reads the process environment itself).
func envToken(lookupEnv func(string) (string, bool), name string) error {
	v, ok := lookupEnv(name)
	switch v = strings.TrimSpace(v); {
	case !ok:
		return fmt.Errorf("environment variable %s is not set", name)
	case v == "":
		return fmt.Errorf("environment variable %s is empty", name)
	}
	if err := agentapi.CheckHeaderValue(v); err != nil {
		return fmt.Errorf("environment variable %s: %w", name, err)
	}
	return nil
}

// tokenProblem is a token source's error without the "agentapi: no access
// token: " its callers in the relay want.
func tokenProblem(err error) string {
	msg := err.Error()
	if errors.Is(err, agentapi.ErrNoToken) {
		msg = strings.TrimPrefix(msg, agentapi.ErrNoToken.Error()+": ")
	}
	return msg
}
