package ssmtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
)

// EventBus is a fake Amazon EventBridge endpoint for PutEvents, in the
// service's JSON 1.1 protocol (X-Amz-Target AWSEvents.PutEvents). It has
// its own URL: point a client at it with Client, or with
// AWS_ENDPOINT_URL_EVENTBRIDGE. Requests that break the protocol fail
// the test. It is safe for concurrent use.
type EventBus struct {
	URL string

	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	entries []PutEntry
	calls   int
	refuse  func(PutEntry) bool
	denied  bool
}

// PutEntry is one PutEvents entry as the wire carried it; Time is the raw
// JSON value (epoch seconds).
type PutEntry struct {
	Source       string
	DetailType   string
	Detail       string
	Resources    []string
	Time         json.RawMessage
	EventBusName string
}

// NewEventBus starts a fake EventBridge; it is closed when the test ends.
func NewEventBus(t testing.TB) *EventBus {
	b := &EventBus{t: t}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	b.URL = b.srv.URL
	t.Cleanup(b.srv.Close)
	return b
}

// Client returns an EventBridge client pointed at the fake, signed with
// DefaultAccessKey in DefaultRegion, that does not retry.
func (b *EventBus) Client() *eventbridge.Client {
	return eventbridge.New(eventbridge.Options{
		Region:           DefaultRegion,
		BaseEndpoint:     aws.String(b.URL),
		Credentials:      credentials.NewStaticCredentialsProvider(DefaultAccessKey, "secret", ""),
		RetryMaxAttempts: 1,
	})
}

// Deny makes every PutEvents fail with AccessDeniedException (the role
// lacks events:PutEvents), or stops doing so.
func (b *EventBus) Deny(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.denied = on
}

// Refuse makes PutEvents report the entries f picks as failed
// (FailedEntryCount), and accept the others; nil refuses none.
func (b *EventBus) Refuse(f func(PutEntry) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refuse = f
}

// Entries returns the entries accepted so far, in order.
func (b *EventBus) Entries() []PutEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]PutEntry(nil), b.entries...)
}

// Calls returns how many PutEvents requests arrived.
func (b *EventBus) Calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

func (b *EventBus) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/":
		b.t.Errorf("eventbridge: %s %s: want POST /", r.Method, r.URL.Path)
	case r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents":
		b.t.Errorf("eventbridge: X-Amz-Target %q: want AWSEvents.PutEvents", r.Header.Get("X-Amz-Target"))
	case r.Header.Get("Content-Type") != "application/x-amz-json-1.1":
		b.t.Errorf("eventbridge: Content-Type %q: want application/x-amz-json-1.1", r.Header.Get("Content-Type"))
	case !strings.Contains(r.Header.Get("Authorization"), "/"+DefaultRegion+"/events/aws4_request"):
		b.t.Errorf("eventbridge: Authorization %q: want SigV4 for events in %s", r.Header.Get("Authorization"), DefaultRegion)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.denied {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"AccessDeniedException","message":"not authorized to perform: events:PutEvents"}`)
		return
	}
	var in struct{ Entries []PutEntry }
	if err := json.Unmarshal(body, &in); err != nil {
		b.t.Errorf("eventbridge: PutEvents body: %v", err)
	}
	if len(in.Entries) < 1 || len(in.Entries) > 10 {
		b.t.Errorf("eventbridge: PutEvents with %d entries: want 1 to 10", len(in.Entries))
	}
	type result struct {
		EventId      string `json:",omitempty"`
		ErrorCode    string `json:",omitempty"`
		ErrorMessage string `json:",omitempty"`
	}
	var out struct {
		FailedEntryCount int
		Entries          []result
	}
	for _, e := range in.Entries {
		if b.refuse != nil && b.refuse(e) {
			out.FailedEntryCount++
			out.Entries = append(out.Entries, result{ErrorCode: "InternalFailure", ErrorMessage: "try again"})
			continue
		}
		b.entries = append(b.entries, e)
		out.Entries = append(out.Entries, result{EventId: strings.Repeat("0", 8) + "-" + string(rune('a'+len(b.entries)%26))})
	}
	json.NewEncoder(w).Encode(out)
}
