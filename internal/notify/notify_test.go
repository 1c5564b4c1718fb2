package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/notify"
)

var secret = []byte("0123456789abcdef-test-secret")

// request is one request a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a real HTTP server answering each request with answer(n)
// (n counts from 1) and recording what it got.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []request
	seen chan request // every request, as it arrives
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter)) *receiver {
	t.Helper()
	rc := &receiver{seen: make(chan request, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := request{header: r.Header.Clone(), body: b}
		rc.mu.Lock()
		rc.got = append(rc.got, req)
		n := len(rc.got)
		rc.mu.Unlock()
		rc.seen <- req
		answer(n, w)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.got...)
}

func ok(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

func start(t *testing.T, cfg notify.Config) *notify.Notifier {
	t.Helper()
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// rec is a record in state s at attempt a.
func rec(key string, s job.State, a int) *job.Record {
	r := job.New("input", key, "", "etag-"+key, 42, 3, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	r.State, r.Attempt = s, a
	return r
}

// The documented scheme, written here from the README and not from the
// package: hex(HMAC-SHA256(secret, "<t>." + body)) in "t=<t>,v1=<hex>".
func verifyAsDocumented(t *testing.T, header string, body []byte, key []byte) bool {
	t.Helper()
	parts := strings.Split(header, ",")
	if len(parts) != 2 || !strings.HasPrefix(parts[0], "t=") || !strings.HasPrefix(parts[1], "v1=") {
		t.Fatalf("signature header %q: want t=<unix>,v1=<hex>", header)
	}
	ts := strings.TrimPrefix(parts[0], "t=")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Fatalf("signature timestamp %q is not the current unix time", ts)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "." + string(body)))
	return hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(strings.TrimPrefix(parts[1], "v1=")))
}

func TestSignatureVerifiesAndForgeriesFail(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, ok)
	n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: rc.URL + "/hook?token=x", Secret: secret}}, OutputBucket: "output"})
	r := rec("a.txt", job.Succeeded, 1)
	r.Outputs = []job.Output{{Key: "a.txt/report.json", Size: 10, SHA256: strings.Repeat("ab", 32)}}
	n.Changed(r)
	got := <-rc.seen

	sig := got.header.Get(notify.SignatureHeader)
	if !verifyAsDocumented(t, sig, got.body, secret) {
		t.Fatalf("signature %q does not verify by the documented scheme", sig)
	}
	if err := notify.Verify(secret, sig, got.body, time.Now(), 0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Forgeries: another secret, a changed body, a replay later on.
	if verifyAsDocumented(t, sig, got.body, []byte("another-secret-of-some-length")) {
		t.Error("a signature verified with the wrong secret")
	}
	if err := notify.Verify([]byte("another-secret-of-some-length"), sig, got.body, time.Now(), 0); !errors.Is(err, notify.ErrBadSignature) {
		t.Errorf("Verify with the wrong secret: %v, want ErrBadSignature", err)
	}
	forged := []byte(strings.Replace(string(got.body), `"succeeded"`, `"dead"`, 1))
	if err := notify.Verify(secret, sig, forged, time.Now(), 0); !errors.Is(err, notify.ErrBadSignature) {
		t.Errorf("Verify of a changed body: %v, want ErrBadSignature", err)
	}
	if err := notify.Verify(secret, sig, got.body, time.Now().Add(10*time.Minute), 0); !errors.Is(err, notify.ErrStale) {
		t.Errorf("Verify 10 minutes later: %v, want ErrStale", err)
	}
	if err := notify.Verify(secret, "v1=abc", got.body, time.Now(), 0); err == nil {
		t.Error("Verify accepted a header without a timestamp")
	}

	// The body is the AWS job event's detail, field for field.
	var d jobevents.Detail
	dec := json.NewDecoder(strings.NewReader(string(got.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("body is not a job event detail: %v\n%s", err, got.body)
	}
	want, _ := json.Marshal(jobevents.DetailOf(r, "output"))
	if string(want) != string(got.body) {
		t.Errorf("body\n%s\nwant the job event detail\n%s", got.body, want)
	}
	if id := got.header.Get(notify.EventIDHeader); id != notify.EventID(r.ID, job.Succeeded, 1) || len(id) != 32 {
		t.Errorf("event ID %q", id)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestRetriedAfter500DeliveredOnce(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: rc.URL, Secret: secret}}})
	n.Changed(rec("b.txt", job.Dead, 3))
	first, second := <-rc.seen, <-rc.seen
	n.Stop() // drains: the delivery is counted before it returns
	if a, b := first.header.Get(notify.EventIDHeader), second.header.Get(notify.EventIDHeader); a != b || a == "" {
		t.Errorf("a retry has event ID %q, the first request %q: want the same", b, a)
	}
	if string(first.body) != string(second.body) {
		t.Error("a retry sent another body")
	}
	if got := len(rc.requests()); got != 2 {
		t.Errorf("%d requests, want 2 (one 500, one 200)", got)
	}
	s := n.Stats()[0]
	if s.Delivered != 1 || s.Retries != 1 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v, want 1 delivered after 1 retry", s)
	}
}

func TestWhichAnswersAreRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status   int
		requests int // with MaxAttempts 3
	}{
		{http.StatusBadRequest, 1}, {http.StatusUnauthorized, 1}, {http.StatusNotFound, 1}, {http.StatusFound, 1},
		{http.StatusRequestTimeout, 3}, {http.StatusTooManyRequests, 3}, {http.StatusBadGateway, 3}, {http.StatusServiceUnavailable, 3},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(_ int, w http.ResponseWriter) {
				if tc.status == http.StatusFound {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
			})
			n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: rc.URL, Secret: secret}}, MaxAttempts: 3})
			n.Changed(rec("c.txt", job.Succeeded, 1))
			for i := 0; i < tc.requests; i++ {
				<-rc.seen
			}
			n.Stop()
			if got := len(rc.requests()); got != tc.requests {
				t.Errorf("%d answered %d requests, want %d", tc.status, got, tc.requests)
			}
			if s := n.Stats()[0]; s.Failed != 1 || s.Delivered != 0 {
				t.Errorf("stats %+v, want 1 failed", s)
			}
		})
	}
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, ok)
	url := rc.URL
	rc.Close() // nothing listens there now
	n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: url, Secret: secret}}, MaxAttempts: 3})
	n.Changed(rec("d.txt", job.Succeeded, 1))
	n.Stop()
	if s := n.Stats()[0]; s.Failed != 1 || s.Retries != 2 {
		t.Errorf("stats %+v, want 1 failed after 2 retries", s)
	}
}

func TestStateFilter(t *testing.T) {
	t.Parallel()
	all, ends := newReceiver(t, ok), newReceiver(t, ok)
	n := start(t, notify.Config{Webhooks: []notify.Webhook{
		{URL: all.URL, Secret: secret},
		{URL: ends.URL, Secret: secret, States: []job.State{job.Succeeded, job.Dead}},
	}})
	for _, r := range []*job.Record{
		rec("e.txt", job.Queued, 0), rec("e.txt", job.Running, 1), rec("e.txt", job.Succeeded, 1),
		rec("f.txt", job.Queued, 0), rec("f.txt", job.Running, 1), rec("f.txt", job.Retrying, 1),
		rec("f.txt", job.Running, 2), rec("f.txt", job.Dead, 2),
	} {
		n.Changed(r)
	}
	n.Stop()
	states := func(rc *receiver) []string {
		var out []string
		for _, r := range rc.requests() {
			var d jobevents.Detail
			if err := json.Unmarshal(r.body, &d); err != nil {
				t.Fatal(err)
			}
			out = append(out, d.Key+":"+d.State)
		}
		return out
	}
	if got := strings.Join(states(ends), " "); got != "e.txt:succeeded f.txt:dead" {
		t.Errorf("the filtered webhook got %s, want e.txt:succeeded f.txt:dead", got)
	}
	if got := len(states(all)); got != 8 {
		t.Errorf("the unfiltered webhook got %d changes, want 8: %v", got, states(all))
	}
}

// A heartbeat (the same state and attempt written again) is no change.
func TestHeartbeatIsNoChange(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, ok)
	n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: rc.URL, Secret: secret}}})
	for i := 0; i < 5; i++ {
		n.Changed(rec("g.txt", job.Running, 1))
	}
	n.Changed(rec("g.txt", job.Succeeded, 1))
	n.Stop()
	if got := len(rc.requests()); got != 2 {
		t.Errorf("%d requests, want 2 (running once, succeeded)", got)
	}
}

// A receiver that does not answer fills its queue; what does not fit is
// dropped and counted, and Changed never waits.
func TestQueueOverflowIsCounted(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter) { <-release; w.WriteHeader(http.StatusOK) })
	var logs strings.Builder
	var logMu sync.Mutex
	n := start(t, notify.Config{
		Webhooks:  []notify.Webhook{{URL: rc.URL, Secret: secret}},
		QueueSize: 2,
		Logf:      func(f string, a ...any) { logMu.Lock(); defer logMu.Unlock(); logs.WriteString(f + "\n") },
	})
	n.Changed(rec("h0", job.Succeeded, 1))
	<-rc.seen // in flight, out of the queue
	for i := 1; i <= 9; i++ {
		n.Changed(rec("h"+strconv.Itoa(i), job.Succeeded, 1)) // returns at once, or this test would hang
	}
	s := n.Stats()[0]
	if s.Dropped != 7 || s.Queued != 2 {
		t.Errorf("stats %+v, want 2 queued and 7 dropped", s)
	}
	close(release)
	n.Stop()
	if s := n.Stats()[0]; s.Delivered != 3 || s.Dropped != 7 {
		t.Errorf("after release: %+v, want 3 delivered, 7 dropped", s)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "queue full") {
		t.Errorf("no overflow logged:\n%s", logs.String())
	}
}

// Stop with a receiver that never answers returns after the drain
// timeout and counts what was left as failed.
func TestStopIsBounded(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	rc := newReceiver(t, func(int, http.ResponseWriter) { <-hang })
	t.Cleanup(func() { close(hang) }) // before the receiver's Close, which waits for its handlers
	n := start(t, notify.Config{Webhooks: []notify.Webhook{{URL: rc.URL, Secret: secret}}, DrainTimeout: 50 * time.Millisecond})
	for i := 0; i < 3; i++ {
		n.Changed(rec("i"+strconv.Itoa(i), job.Succeeded, 1))
	}
	<-rc.seen
	n.Stop()
	if s := n.Stats()[0]; s.Failed != 3 || s.Delivered != 0 {
		t.Errorf("stats after Stop %+v, want the 3 changes failed", s)
	}
	n.Changed(rec("late", job.Succeeded, 1)) // after Stop: ignored, no panic
}

func TestConfigIsChecked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		hook notify.Webhook
		want string
	}{
		{notify.Webhook{URL: "file:///etc/passwd", Secret: secret}, "only http:// and https://"},
		{notify.Webhook{URL: "ftp://example.com/x", Secret: secret}, "only http:// and https://"},
		{notify.Webhook{URL: "gopher://example.com", Secret: secret}, "only http:// and https://"},
		{notify.Webhook{URL: "http:///path", Secret: secret}, "no host"},
		{notify.Webhook{URL: "https://example.com", Secret: []byte("short")}, "at least 16"},
		{notify.Webhook{URL: "https://example.com", Secret: secret, States: []job.State{"done"}}, `unknown state "done"`},
	} {
		_, err := notify.New(notify.Config{Webhooks: []notify.Webhook{tc.hook}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "notify.webhooks[0].") {
			t.Errorf("%+v: %v, want an error naming notify.webhooks[0] and saying %q", tc.hook.URL, err, tc.want)
		}
	}
	if _, err := notify.New(notify.Config{Webhooks: []notify.Webhook{{URL: "https://user:pw@example.com/h?token=t", Secret: secret}}}); err != nil {
		t.Errorf("a valid webhook refused: %v", err)
	}
	if got := notify.Redact("https://user:pw@example.com/h?token=t"); strings.Contains(got, "pw") || strings.Contains(got, "token") {
		t.Errorf("Redact left a credential: %s", got)
	}
}
