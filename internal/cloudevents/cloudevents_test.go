package cloudevents

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

const structuredJSON = `{
  "specversion": "1.0",
  "type": "com.example.ticket.created",
  "source": "/crm/tickets",
  "id": "A234-1234-1234",
  "time": "2026-12-01T09:30:00Z",
  "subject": "T-4711",
  "comexampleextension1": "value",
  "priority": 2,
  "urgent": true,
  "datacontenttype": "application/json",
  "data": {"ticket": {"id": "T-4711", "summary": "Export times out"}}
}`

func TestStructuredModeWithInlineJSONData(t *testing.T) {
	h := nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}
	e, err := Read([]byte(structuredJSON), h)
	if err != nil {
		t.Fatal(err)
	}
	if e.Mode != Structured || e.ID() != "A234-1234-1234" || e.Source() != "/crm/tickets" || e.Type() != "com.example.ticket.created" {
		t.Fatalf("event %+v", e)
	}
	want := map[string]any{
		"specversion": "1.0", "type": "com.example.ticket.created", "source": "/crm/tickets",
		"id": "A234-1234-1234", "time": "2026-12-01T09:30:00Z", "subject": "T-4711",
		"comexampleextension1": "value", "priority": int64(2), "urgent": true,
		"datacontenttype": "application/json",
	}
	if !reflect.DeepEqual(e.Attributes, want) {
		t.Errorf("attributes\n got %#v\nwant %#v", e.Attributes, want)
	}
	v, err := e.Value()
	if err != nil {
		t.Fatal(err)
	}
	if got := v.(map[string]any)["ticket"].(map[string]any)["summary"]; got != "Export times out" {
		t.Errorf("data.ticket.summary = %v", got)
	}
	text, err := e.Text()
	if err != nil || text != `{"ticket":{"id":"T-4711","summary":"Export times out"}}` {
		t.Errorf("Text() = %q, %v: want the data as compact JSON", text, err)
	}
}

// A message with no ce- header and no CloudEvents Content-Type is
// structured: what a producer that sets no headers, or only
// application/json, sends.
func TestNoCEHeadersMeansStructured(t *testing.T) {
	for _, h := range []nats.Header{nil, {"Content-Type": {"application/json"}}} {
		e, err := Read([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","data":"plain text"}`), h)
		if err != nil {
			t.Fatal(err)
		}
		if text, _ := e.Text(); e.Mode != Structured || text != "plain text" {
			t.Fatalf("headers %v: mode %s, text %q", h, e.Mode, text)
		}
	}
}

func TestStructuredDataBase64(t *testing.T) {
	h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	// "aGVsbG8gd29ybGQ=" is "hello world"; as text/plain it is the text.
	e, err := Read([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"text/plain","data_base64":"aGVsbG8gd29ybGQ="}`), h)
	if err != nil {
		t.Fatal(err)
	}
	if text, err := e.Text(); err != nil || text != "hello world" {
		t.Fatalf("Text() = %q, %v", text, err)
	}
	// As JSON it is parsed.
	e, err = Read([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","data_base64":"eyJhIjogMX0="}`), h)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.Value(); err != nil || !reflect.DeepEqual(v, map[string]any{"a": int64(1)}) {
		t.Fatalf("Value() = %#v, %v", v, err)
	}
	// Bytes that are not text are a value, but not an input.
	e, err = Read([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"application/octet-stream","data_base64":"/w=="}`), h)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Value(); !reflect.DeepEqual(v, []byte{0xff}) {
		t.Errorf("Value() = %#v", v)
	}
	if _, err := e.Text(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Text() of non-UTF-8 data: %v", err)
	}
}

func TestBinaryMode(t *testing.T) {
	h := nats.Header{
		"ce-specversion": {"1.0"},
		"Ce-Type":        {"com.example.someevent"},
		"CE-ID":          {"1234-1234-1234"},
		"ce-source":      {"/mycontext/subcontext"},
		// Percent-encoded per the binding: "Euro € 😀".
		"ce-subject":      {"Euro%20%E2%82%AC%20%F0%9F%98%80"},
		"ce-quoted":       {`"a \"b\" c%25"`},
		"ce-lower":        {"%c3%a9"},
		"Content-Type":    {"application/json"},
		"Nats-Msg-Id":     {"not an attribute"},
		"ce-unneccessary": {"%41"},
	}
	e, err := Read([]byte(`{"summary": "s"}`), h)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"specversion": "1.0", "type": "com.example.someevent", "id": "1234-1234-1234",
		"source": "/mycontext/subcontext", "subject": "Euro € 😀", "quoted": `a "b" c%`,
		"lower": "é", "unneccessary": "A", "datacontenttype": "application/json",
	}
	if e.Mode != Binary || !reflect.DeepEqual(e.Attributes, want) {
		t.Fatalf("mode %s, attributes\n got %#v\nwant %#v", e.Mode, e.Attributes, want)
	}
	if v, err := e.Value(); err != nil || !reflect.DeepEqual(v, map[string]any{"summary": "s"}) {
		t.Fatalf("Value() = %#v, %v", v, err)
	}
	// ce-datacontenttype wins over Content-Type.
	h["ce-datacontenttype"] = []string{"text/plain"}
	e, err = Read([]byte(`{"summary": "s"}`), h)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Value(); v != `{"summary": "s"}` {
		t.Errorf("text/plain data as a value: %#v", v)
	}
}

func TestMalformedEventsNameTheAttribute(t *testing.T) {
	ce := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	for _, tc := range []struct {
		name string
		body string
		h    nats.Header
		want string
	}{
		{"missing id", `{"specversion":"1.0","type":"t","source":"s"}`, ce, `the required attribute "id" is missing`},
		{"missing source", `{"specversion":"1.0","type":"t","id":"1"}`, ce, `"source" is missing`},
		{"missing type", `{"specversion":"1.0","source":"s","id":"1"}`, ce, `"type" is missing`},
		{"missing specversion", `{"type":"t","source":"s","id":"1"}`, ce, `"specversion" is missing`},
		{"empty id", `{"specversion":"1.0","type":"t","source":"s","id":""}`, ce, `"id" is empty`},
		{"null id is absent", `{"specversion":"1.0","type":"t","source":"s","id":null}`, ce, `"id" is missing`},
		{"old specversion", `{"specversion":"0.3","type":"t","source":"s","id":"1"}`, ce, `specversion "0.3" is not supported`},
		{"id not a string", `{"specversion":"1.0","type":"t","source":"s","id":7}`, ce, `"id" must be a string, not a number`},
		{"bad name", `{"specversion":"1.0","type":"t","source":"s","id":"1","Subject":"x"}`, ce, `"Subject" is not a valid attribute name`},
		{"object extension", `{"specversion":"1.0","type":"t","source":"s","id":"1","ext":{}}`, ce, `"ext" must be a string, an integer or a boolean`},
		{"huge integer", `{"specversion":"1.0","type":"t","source":"s","id":"1","ext":4294967296}`, ce, `32 bits`},
		{"both data", `{"specversion":"1.0","type":"t","source":"s","id":"1","data":1,"data_base64":"MQ=="}`, ce, `both data and data_base64`},
		{"bad base64", `{"specversion":"1.0","type":"t","source":"s","id":"1","data_base64":"***"}`, ce, `data_base64 is not valid base64`},
		{"bad time", `{"specversion":"1.0","type":"t","source":"s","id":"1","time":"yesterday"}`, ce, `"time" is not an RFC 3339 timestamp`},
		{"not JSON", `<event/>`, ce, `not a JSON event`},
		{"repeated attribute", `{"specversion":"1.0","type":"t","source":"s","id":"1","id":"2"}`, ce, `"id" appears more than once`},
		{"batch", `[]`, nats.Header{"Content-Type": {"application/cloudevents-batch+json"}}, `only single events`},
		{"binary missing source", `{}`, nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"1"}}, `"source" is missing (binary mode: no ce-source header)`},
		{"a JSON content type but no ce- headers", `{"summary":"s"}`, nats.Header{"Content-Type": {"application/json"}}, `"id" is missing (read as structured mode: no ce- header)`},
		{"binary bad percent", ``, nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"1%2"}, "ce-source": {"s"}}, `"ce-id": bad percent-encoding`},
		{"binary overlong", ``, nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"%C0%A0"}, "ce-source": {"s"}}, `not valid UTF-8`},
		{"binary conflict", ``, nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"1"}, "Ce-Id": {"2"}, "ce-source": {"s"}}, `"id" has two different values`},
		{"binary bad name", ``, nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"1"}, "ce-source": {"s"}, "ce-my_ext": {"x"}}, `"my_ext" is not a valid attribute name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read([]byte(tc.body), tc.h)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read: %v\nwant ErrInvalid saying %q", err, tc.want)
			}
		})
	}
}

func TestMalformedDataIsRefusedWhenRead(t *testing.T) {
	h := nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"t"}, "ce-id": {"1"}, "ce-source": {"s"}, "Content-Type": {"application/json"}}
	e, err := Read([]byte(`{"a":`), h)
	if err != nil {
		t.Fatal(err) // the attributes are fine; the data is read lazily
	}
	if _, err := e.Value(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "data:") {
		t.Fatalf("Value() of broken JSON data: %v", err)
	}
}

func TestIsStructured(t *testing.T) {
	for _, tc := range []struct {
		h    nats.Header
		want bool
	}{
		{nil, true},
		{nats.Header{"Content-Type": {"Application/CloudEvents+JSON"}}, true},
		{nats.Header{"content-type": {"application/cloudevents"}}, true},
		{nats.Header{"Content-Type": {"application/json"}}, true}, // no ce- header: it cannot be binary
		{nats.Header{"Content-Type": {"application/json"}, "ce-id": {"1"}}, false},
		{nats.Header{"ce-id": {"1"}}, false},
		{nats.Header{"Nats-Msg-Id": {"1"}}, true},
	} {
		if got := IsStructured(tc.h); got != tc.want {
			t.Errorf("IsStructured(%v) = %v", tc.h, got)
		}
	}
}
