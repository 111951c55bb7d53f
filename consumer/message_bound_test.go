package consumer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/agentrelay/agentrelay/consumer"
)

// A decoding error does not repeat what the producer wrote at length: an
// unknown field named with a megabyte gives an error of a few hundred
// bytes, which still unwraps to encoding/json's error.
func TestDecodeErrorIsBounded(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("k", 1<<20)
	_, reason, err := consumer.Contract{}.Decode([]byte(`{"input":"x","`+name+`":"v"}`), nil)
	if reason != consumer.ReasonInvalidJSON || err == nil {
		t.Fatalf("reason %q, err %v", reason, err)
	}
	if n := len(err.Error()); n > 512 {
		t.Errorf("error text is %d bytes", n)
	}
	if !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("error %q no longer says what is wrong", err)
	}
	_, _, err = consumer.Contract{}.Decode([]byte(`{"input":1}`), nil)
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) {
		t.Errorf("error %v does not unwrap to encoding/json's", err)
	}
}
