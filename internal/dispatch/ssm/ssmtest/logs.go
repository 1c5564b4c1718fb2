package ssmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Logs is a fake Amazon CloudWatch Logs endpoint for CreateLogStream and
// PutLogEvents, in the service's JSON 1.1 protocol (X-Amz-Target
// Logs_20140328.*), holding the log groups it was given. It enforces
// PutLogEvents' limits (10,000 events and 1 MiB per call, 26 bytes counted
// per event, messages not empty, timestamps in order). It has its own URL:
// point a client at it with BaseEndpoint or AWS_ENDPOINT_URL_CLOUDWATCH_LOGS.
// It is safe for concurrent use.
type Logs struct {
	URL string

	t   testing.TB
	srv *httptest.Server
	mu  sync.Mutex
	// groups -> streams -> messages
	groups map[string]map[string][]string
}

// NewLogs starts a fake CloudWatch Logs with the given (empty) log groups;
// it is closed when the test ends.
func NewLogs(t testing.TB, groups ...string) *Logs {
	l := &Logs{t: t, groups: map[string]map[string][]string{}}
	for _, g := range groups {
		l.groups[g] = map[string][]string{}
	}
	l.srv = httptest.NewServer(http.HandlerFunc(l.serve))
	l.URL = l.srv.URL
	t.Cleanup(l.srv.Close)
	return l
}

// Messages returns the messages of a stream, in order; nil when there is
// no such stream.
func (l *Logs) Messages(group, stream string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.groups[group][stream]...)
}

// Streams returns the names of a group's streams.
func (l *Logs) Streams(group string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for s := range l.groups[group] {
		out = append(out, s)
	}
	return out
}

func (l *Logs) fail(w http.ResponseWriter, code, msg string) {
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func (l *Logs) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	target := r.Header.Get("X-Amz-Target")
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/":
		l.t.Errorf("logs: %s %s: want POST /", r.Method, r.URL.Path)
	case r.Header.Get("Content-Type") != "application/x-amz-json-1.1":
		l.t.Errorf("logs: Content-Type %q: want application/x-amz-json-1.1", r.Header.Get("Content-Type"))
	case !strings.Contains(r.Header.Get("Authorization"), "/"+DefaultRegion+"/logs/aws4_request"):
		l.t.Errorf("logs: Authorization %q: want SigV4 for logs in %s", r.Header.Get("Authorization"), DefaultRegion)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	var in struct {
		LogGroupName  string `json:"logGroupName"`
		LogStreamName string `json:"logStreamName"`
		LogEvents     []struct {
			Message   string `json:"message"`
			Timestamp int64  `json:"timestamp"`
		} `json:"logEvents"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		l.t.Errorf("logs: %s body: %v", target, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	group, ok := l.groups[in.LogGroupName]
	if !ok {
		l.fail(w, "ResourceNotFoundException", "The specified log group does not exist.")
		return
	}
	switch target {
	case "Logs_20140328.CreateLogStream":
		if _, dup := group[in.LogStreamName]; dup {
			l.fail(w, "ResourceAlreadyExistsException", "The specified log stream already exists")
			return
		}
		if in.LogStreamName == "" || strings.ContainsAny(in.LogStreamName, ":*") {
			l.fail(w, "InvalidParameterException", "bad log stream name")
			return
		}
		group[in.LogStreamName] = []string{}
		io.WriteString(w, "{}")
	case "Logs_20140328.PutLogEvents":
		stream, ok := group[in.LogStreamName]
		if !ok {
			l.fail(w, "ResourceNotFoundException", "The specified log stream does not exist.")
			return
		}
		size, last := 0, int64(0)
		for _, e := range in.LogEvents {
			size += len(e.Message) + 26
			if e.Message == "" || e.Timestamp < last {
				l.t.Errorf("logs: PutLogEvents with an empty message or timestamps out of order")
			}
			last = e.Timestamp
		}
		if n := len(in.LogEvents); n == 0 || n > 10000 || size > 1<<20 {
			l.t.Errorf("logs: PutLogEvents with %d events, %d bytes: want 1 to 10,000 and at most 1 MiB", n, size)
			l.fail(w, "InvalidParameterException", fmt.Sprintf("%d events, %d bytes", n, size))
			return
		}
		for _, e := range in.LogEvents {
			stream = append(stream, e.Message)
		}
		group[in.LogStreamName] = stream
		io.WriteString(w, `{"nextSequenceToken":"0"}`)
	default:
		l.t.Errorf("logs: %s is not faked", target)
		l.fail(w, "UnknownOperationException", target)
	}
}
