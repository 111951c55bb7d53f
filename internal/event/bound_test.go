package event_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/internal/deadletter"
	"github.com/agentrelay/agentrelay/internal/event"
)

// A decoding error does not repeat what the producer wrote at length: an
// unknown field named with a megabyte gives an error of a few hundred
// bytes, which still unwraps to encoding/json's error.
func TestDecodeErrorIsBounded(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("k", 1<<20)
	_, reason, err := event.Contract{}.WithDefaults().Decode([]byte(`{"input":"x","`+name+`":"v"}`), nil)
	if reason != deadletter.ReasonInvalidJSON || err == nil {
		t.Fatalf("reason %q, err %v", reason, err)
	}
	if n := len(err.Error()); n > 512 {
		t.Errorf("error text is %d bytes", n)
	}
	if !strings.Contains(err.Error(), "unknown key") {
		t.Errorf("error %q no longer says what is wrong", err)
	}
	// A syntax error quoting the producer's text is cut too, and still
	// unwraps to encoding/json's error.
	_, _, err = event.Contract{}.WithDefaults().Decode([]byte(`{"input":"x",`+name+`}`), nil)
	var syntaxErr *json.SyntaxError
	if !errors.As(err, &syntaxErr) || len(err.Error()) > 512 {
		t.Errorf("error %.600q does not unwrap to encoding/json's, or is not bounded", err)
	}
}
