package promcheck

import (
	"maps"
	"slices"

	"github.com/prometheus/prometheus/promql/parser"
)

// OutputLabels returns the label names the result of expr can carry: what
// an alert annotation's {{ $labels.x }} or a legend's {{x}} can print. It
// follows aggregations (by, without), functions that drop labels
// (histogram_quantile drops le) and vector matching (a filter keeps its left
// side's labels, `on` keeps only the matching labels). The metric name is
// never included.
func OutputLabels(expr parser.Expr, s Scope) []string {
	set := outputLabels(expr, s)
	delete(set, "__name__")
	return slices.Sorted(maps.Keys(set))
}

type labelSet map[string]bool

func setOf(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func outputLabels(e parser.Expr, s Scope) labelSet {
	switch e := e.(type) {
	case *parser.VectorSelector:
		return setOf(s.labelsOf(selectorName(e))...)
	case *parser.MatrixSelector:
		return outputLabels(e.VectorSelector, s)
	case *parser.SubqueryExpr:
		return outputLabels(e.Expr, s)
	case *parser.ParenExpr:
		return outputLabels(e.Expr, s)
	case *parser.UnaryExpr:
		return outputLabels(e.Expr, s)
	case *parser.StepInvariantExpr:
		return outputLabels(e.Expr, s)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet{}
	case *parser.AggregateExpr:
		inner := outputLabels(e.Expr, s)
		switch {
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			return inner
		case e.Without:
			for _, g := range e.Grouping {
				delete(inner, g)
			}
			return inner
		default:
			out := setOf(e.Grouping...)
			if e.Op == parser.COUNT_VALUES {
				if lit, ok := e.Param.(*parser.StringLiteral); ok {
					out[lit.Val] = true
				}
			}
			return out
		}
	case *parser.Call:
		return callLabels(e, s)
	case *parser.BinaryExpr:
		return binaryLabels(e, s)
	}
	return labelSet{}
}

func callLabels(c *parser.Call, s Scope) labelSet {
	out := labelSet{}
	for _, a := range c.Args {
		if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
			maps.Copy(out, outputLabels(a, s))
		}
	}
	switch c.Func.Name {
	case "histogram_quantile", "histogram_fraction":
		delete(out, "le")
	case "label_replace", "label_join":
		if dst, ok := c.Args[1].(*parser.StringLiteral); ok {
			out[dst.Val] = true
		}
	case "vector", "time", "scalar":
		return labelSet{}
	}
	return out
}

func binaryLabels(b *parser.BinaryExpr, s Scope) labelSet {
	lhs, rhs := outputLabels(b.LHS, s), outputLabels(b.RHS, s)
	lv := b.LHS.Type() == parser.ValueTypeVector
	rv := b.RHS.Type() == parser.ValueTypeVector
	switch {
	case !lv && !rv:
		return labelSet{}
	case !rv:
		return lhs
	case !lv:
		return rhs
	}
	switch b.Op {
	case parser.LAND, parser.LUNLESS:
		return lhs
	case parser.LOR:
		maps.Copy(lhs, rhs)
		return lhs
	}
	vm := b.VectorMatching
	if b.Op.IsComparisonOperator() && !b.ReturnBool {
		// A filter: the left side's samples pass through unchanged (the
		// right side's for group_right).
		if vm != nil && vm.Card == parser.CardOneToMany {
			return rhs
		}
		return lhs
	}
	side := lhs
	if vm != nil && vm.Card == parser.CardOneToMany {
		side = rhs
	}
	if vm == nil {
		return side
	}
	if vm.Card == parser.CardOneToOne {
		if vm.On {
			return setOf(vm.MatchingLabels...)
		}
		for _, l := range vm.MatchingLabels {
			delete(side, l)
		}
		return side
	}
	maps.Copy(side, setOf(vm.Include...))
	return side
}
