// Package appconfig maps the configuration file onto the parts of
// agentrelay that are not the relay itself: a route's message contract
// (its mapping compiled), the dead-letter settings, and the problems in a
// file that those parts find. The worker (internal/app) builds on it and
// adds the relay's own checks; the command line's tools use it alone, so
// that they link none of the worker.
package appconfig

import (
	"errors"
	"fmt"

	"github.com/agentrelay/agentrelay/config"
	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
	"github.com/agentrelay/agentrelay/internal/mapping"
	"github.com/agentrelay/agentrelay/internal/subject"
	"github.com/agentrelay/agentrelay/internal/triggerglob"
)

// A zero value in the file stays zero here and means the component's
// default, resolved where the component is built (event.Contract.WithDefaults,
// deadletter.Config.WithDefaults).

// BaseContract is rc's message contract without its mapping: what the
// checks of the contract's own fields need. Contract compiles the mapping.
func BaseContract(rc config.Route) event.Contract {
	return event.Contract{
		Format:                event.BodyFormat(rc.Body),
		ConversationKeyHeader: rc.ConversationKeyHeader,
		MaxInputBytes:         rc.MaxInputBytes,
		// Checked by config.Validate; invalid ones allow nothing.
		AllowedTriggerIDs: triggerglob.MustCompile(rc.AllowedTriggerIDs...),
	}
}

// Contract is rc's message contract with its mapping compiled, as the
// worker reads rc's messages. The error joins a *mapping.FieldError per
// expression that does not compile; Problems reports them at their paths.
func Contract(rc config.Route) (event.Contract, error) {
	c := BaseContract(rc)
	if rc.Map.IsZero() {
		return c, nil
	}
	m, err := mapping.Compile(mapping.Spec{Input: rc.Map.Input, ConversationKey: rc.Map.ConversationKey, TriggerID: rc.Map.TriggerID})
	if err != nil {
		return c, err
	}
	c.Mapping = m
	return c, nil
}

// DeadLetter is the dead-letter section as the dead-letter writer and
// store take it.
func DeadLetter(d config.DeadLetter) deadletter.Config {
	return deadletter.Config{
		Stream:          d.Stream,
		SubjectPrefix:   d.SubjectPrefix,
		MaxAge:          d.MaxAge.D(),
		MaxBytes:        d.MaxBytes,
		Replicas:        d.Replicas,
		DuplicateWindow: d.DuplicateWindow.D(),
		PublishTimeout:  d.PublishTimeout.D(),
	}
}

// Problems is the config.Rule of these parts: no managed stream or route
// reads the dead-letter stream or its subjects, and every route's mapping
// compiles, each problem under the path of the field that set it.
// internal/app.CheckConfig adds the relay's own.
func Problems(cfg *config.Config) []string {
	var out []string
	dl := DeadLetter(cfg.DeadLetter).WithDefaults()
	dlSubjects := dl.SubjectPrefix + ".>"
	for i, s := range cfg.Streams {
		if s.Name == dl.Stream {
			out = append(out, fmt.Sprintf("streams[%d].name: %q is the dead-letter stream; configure it under dead_letter", i, s.Name))
		}
		for j, subj := range s.Subjects {
			if subject.Overlap(subj, dlSubjects) {
				out = append(out, fmt.Sprintf("streams[%d].subjects[%d]: %q overlaps the dead-letter subjects %s", i, j, subj, dlSubjects))
			}
		}
	}
	for i, rc := range cfg.Routes {
		out = append(out, mappingProblems(fmt.Sprintf("routes[%d]", i), rc)...)
		if rc.Stream == dl.Stream {
			out = append(out, fmt.Sprintf("routes[%d].stream: %q is the dead-letter stream; relaying from it would loop (replay dead letters with `agentrelay dlq replay`)", i, rc.Stream))
		}
	}
	return out
}

// mappingProblems are the compile errors of rc's mapping, at their paths
// under path ("routes[2]").
func mappingProblems(path string, rc config.Route) []string {
	_, err := Contract(rc)
	if err == nil {
		return nil
	}
	var out []string
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *mapping.FieldError
		if errors.As(e, &fe) {
			out = append(out, fmt.Sprintf("%s.map.%s: %v", path, fe.Field, fe.Err))
		} else {
			out = append(out, fmt.Sprintf("%s.map: %v", path, e))
		}
	}
	return out
}
