package app

import (
	"errors"
	"fmt"

	"github.com/agentrelay/agentrelay/agentapi"
	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/agentset"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// Agents is the set of agents of a route that takes its trigger id from its
// events (rc.MapsTriggerID): the ids allowed_trigger_ids allows, each with
// the token agent_tokens, token.dir or token gives it. onReload, when not
// nil, is told of a token file read again after it changed. Every token
// source that can be opened now is, so that a missing file or variable is
// reported at start-up; a token directory's files are read when their id
// is first called.
func Agents(client *agentapi.Client, rc config.Route, onReload func(file string)) (*agentset.Set, error) {
	allowed, err := triggerglob.Compile(rc.AllowedTriggerIDs)
	if err != nil {
		return nil, fmt.Errorf("allowed_trigger_ids: %w", err)
	}
	cfg := agentset.Config{Allowed: allowed, Dir: rc.Token.Dir}
	var errs []error
	for i, at := range rc.AgentTokens {
		ids, err := triggerglob.Compile([]string{at.IDs})
		if err != nil {
			errs = append(errs, fmt.Errorf("agent_tokens[%d].ids: %w", i, err))
			continue
		}
		ts, err := TokenSource(config.Token{File: at.File, Env: at.Env})
		if err != nil {
			errs = append(errs, fmt.Errorf("agent_tokens[%d]: %w", i, err))
			continue
		}
		watchReload(ts, at.File, onReload)
		cfg.Rules = append(cfg.Rules, agentset.Rule{IDs: ids, Tokens: ts})
	}
	if rc.Token.File != "" || rc.Token.Env != "" {
		ts, err := TokenSource(rc.Token)
		if err != nil {
			errs = append(errs, fmt.Errorf("token: %w", err))
		} else {
			watchReload(ts, rc.Token.File, onReload)
			cfg.Fallback = ts
		}
	}
	if onReload != nil && rc.Token.Dir != "" {
		cfg.OnReload = func(id agentapi.TriggerID) { onReload(rc.Token.Dir + "/" + id.String()) }
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return agentset.New(client, cfg)
}

func watchReload(ts agentapi.TokenSource, file string, onReload func(string)) {
	if ft, ok := ts.(*agentapi.FileToken); ok && onReload != nil {
		ft.OnChange(func() { onReload(file) })
	}
}
