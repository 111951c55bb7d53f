// Command gen-alerts writes the Prometheus Operator's resources of the alert
// pack from its plain sources: the PrometheusRule from
// prometheus/agentrelay.rules.yaml and the AlertmanagerConfig from
// alertmanager/inhibit-rules.yaml. Run it from deploy/ (`make alerts` does);
// a test fails while the committed resources differ from what it writes.
package main

import (
	"fmt"
	"os"

	"github.com/agentrelay/agentrelay/deploy/internal/alertpack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen-alerts:", err)
		os.Exit(1)
	}
}

func run() error {
	for _, g := range []struct {
		source, target string
		render         func([]byte) ([]byte, error)
	}{
		{alertpack.RulesSource, alertpack.PrometheusRulePath, alertpack.PrometheusRule},
		{alertpack.InhibitSource, alertpack.AlertmanagerCfgPath, alertpack.AlertmanagerConfig},
	} {
		src, err := os.ReadFile(g.source)
		if err != nil {
			return err
		}
		out, err := g.render(src)
		if err != nil {
			return fmt.Errorf("%s: %w", g.source, err)
		}
		if err := os.WriteFile(g.target, out, 0o644); err != nil {
			return err
		}
	}
	return nil
}
