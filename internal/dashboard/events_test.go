package dashboard

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// fakeSnapshots is a Snapshots with function fields.
type fakeSnapshots struct {
	list   func() ([]SnapshotInfo, error)
	create func() error
}

func (f fakeSnapshots) List(context.Context) ([]SnapshotInfo, error) { return f.list() }
func (f fakeSnapshots) Create(context.Context) error                 { return f.create() }
func (f fakeSnapshots) Schedule() string                             { return "every 6h" }
func (f fakeSnapshots) Retention() string                            { return "keep 7 daily" }

func TestSnapshotsPanel(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{})
	if body := request(s, "GET", "/", nil, nil).Body.String(); strings.Contains(body, `id="snapshots"`) {
		t.Error("the snapshot panel shows without snapshots configured")
	}
	created := 0
	s.deps.Snapshots = fakeSnapshots{
		list: func() ([]SnapshotInfo, error) {
			return []SnapshotInfo{{ID: "snap-<1>", CreatedAt: time.Now(), Size: 2 << 20}}, nil
		},
		create: func() error { created++; return nil },
	}
	page := request(s, "GET", "/", nil, nil)
	body := page.Body.String()
	for _, want := range []string{`id="snapshots"`, "every 6h", "keep 7 daily", "snap-&lt;1&gt;", `action="/snapshots"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the panel lacks %q", want)
		}
	}
	c := csrfCookieOf(t, page)
	if w := request(s, "POST", "/snapshots", nil, nil, c); w.Code != http.StatusForbidden || created != 0 {
		t.Errorf("snapshot without a CSRF token: %d, %d taken", w.Code, created)
	}
	if w := request(s, "POST", "/snapshots", nil, map[string]string{csrfHeader: c.Value}, c); w.Code != http.StatusSeeOther || created != 1 {
		t.Errorf("snapshot with the token: %d, %d taken", w.Code, created)
	}
}

func TestLiveStreamNamesChangedJobs(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := job.New("in", "live.txt", "", "e1", 1, 1, time.Now())
	sc := bufio.NewScanner(resp.Body)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		if strings.Contains(line, r.ID) {
			if !strings.Contains(line, `"queued":1`) {
				t.Errorf("event lacks the counts: %s", line)
			}
			return
		}
		if !sent { // the first event is the greeting with the counts
			s.Observe(r)
			sent = true
		}
	}
	t.Fatalf("the stream ended without naming job %s: %v", r.ID, sc.Err())
}
