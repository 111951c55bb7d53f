package grafana_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/deploy/internal/grafana"
)

func TestExpand(t *testing.T) {
	got := grafana.Expand(`sum(rate(x{route=~"$route",ns=~"${namespace}"}[$__rate_interval])) / [[old]]`)
	want := `sum(rate(x{route=~".*",ns=~".*"}[5m])) / .*`
	if got != want {
		t.Errorf("Expand = %s, want %s", got, want)
	}
}

func TestQueriesIncludeVariables(t *testing.T) {
	d, err := grafana.Parse([]byte(`{"uid":"u","title":"t","templating":{"list":[
		{"name":"route","type":"query","query":"label_values(x{ns=~\"$ns\"}, route)"}]},
		"panels":[{"id":1,"type":"stat","title":"p","targets":[{"refId":"A","expr":"sum(x)","legendFormat":"{{ route }} {{code}}"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Expr != `count by (route) (x{ns=~".*"})` || qs[1].Expr != "sum(x)" {
		t.Errorf("queries %+v", qs)
	}
	if got := grafana.LegendLabels(qs[1].Legend); !slices.Equal(got, []string{"route", "code"}) {
		t.Errorf("legend labels %v", got)
	}
}

func TestParseRejectsUnknownFields(t *testing.T) {
	_, err := grafana.Parse([]byte(`{"uid":"u","panels":[{"id":1,"targets":[{"refId":"A","exp":"up"}]}]}`))
	if err == nil || !strings.Contains(err.Error(), "exp") {
		t.Errorf("a misspelt key must fail decoding, got %v", err)
	}
}
