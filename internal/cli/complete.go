package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentrelay/agentrelay/internal/dlq"
)

// Shell completion (`agentrelay completion bash|zsh|fish|powershell`)
// offers, besides commands and flags, what the configuration and NATS
// hold: route names (pause, resume, --route), dead-letter reasons
// (--reason), dead-letter sequences (dlq show, dlq replay, --seq) and
// streams (events show STREAM:SEQ). It reads the configuration given with
// --config or $AGENTRELAY_CONFIG (else agentrelay.yaml); dead letters are
// read from NATS, giving up after completionConnect. Whatever fails offers
// nothing: a completion must never print an error into a prompt.

// completionConnect bounds how long completing dead-letter sequences may
// wait for NATS.
const completionConnect = time.Second

// maxCompletedLetters is how many dead letters, the newest, are offered.
const maxCompletedLetters = 100

// completeRoutes offers the configuration's route names, once each, as
// the first argument (args) or a flag's value.
func completeRoutes(e *env, g *globalFlags, args bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, given []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if args && len(given) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cfg, err := g.loadConfig(e)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, r := range cfg.Routes {
			if strings.HasPrefix(r.Name, prefix) {
				out = append(out, cobra.CompletionWithDesc(r.Name, "stream "+r.Stream+", trigger "+r.TriggerID))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeReasons offers the reasons this version dead-letters with.
func completeReasons(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	for _, r := range dlq.Reasons() {
		if strings.HasPrefix(r, prefix) {
			desc := "the API or the worker refused it"
			if slices.Contains(dlq.PoisonReasons, r) {
				desc = "the message itself breaks the contract"
			}
			out = append(out, cobra.CompletionWithDesc(r, desc))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeLetters offers the newest dead letters' sequences, each with its
// route and reason; many says whether more than one argument is taken.
func completeLetters(e *env, g *globalFlags, many bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, given []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !many && len(given) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		letters := newestLetters(cmd.Context(), e, g)
		var out []cobra.Completion
		for _, l := range slices.Backward(letters) {
			seq := strconv.FormatUint(l.Seq, 10)
			if strings.HasPrefix(seq, prefix) && !slices.Contains(given, seq) {
				out = append(out, cobra.CompletionWithDesc(seq, fmt.Sprintf("%s %s %s", safe(l.Route, 40), safe(l.Reason, 40), l.Stored.UTC().Format(time.RFC3339))))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
	}
}

// newestLetters reads the newest dead letters' headers, or nothing.
func newestLetters(ctx context.Context, e *env, g *globalFlags) []dlq.Letter {
	if ctx == nil {
		ctx = context.Background()
	}
	quick := *g
	quick.connectTimeout = completionConnect
	t, s, err := openStore(ctx, e, &quick)
	if err != nil {
		return nil
	}
	defer t.Close()
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return nil
	}
	from := info.State.FirstSeq
	if last := info.State.LastSeq; last-from >= maxCompletedLetters {
		from = last - maxCompletedLetters + 1
	}
	var out []dlq.Letter
	_ = s.Scan(ctx, dlq.Filter{FromSeq: from, MaxSeq: info.State.LastSeq}, true, func(l dlq.Letter) (bool, error) {
		out = append(out, l)
		return true, nil
	})
	return out
}

// completeEventRef offers "STREAM:" for each stream the routes read: the
// start of a STREAM:SEQ.
func completeEventRef(e *env, g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, given []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(given) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cfg, err := g.loadConfig(e)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, r := range cfg.Routes {
			ref := r.Stream + ":"
			if strings.HasPrefix(ref, prefix) && !slices.Contains(out, ref) {
				out = append(out, ref)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}
