package dashboard

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// /metrics is served behind the dashboard's own checks: the Host check on
// loopback, the token (as Prometheus sends it, a bearer token) when set.
func TestMetricsBehindTheDashboardsChecks(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("conveyor_up 1\n")) })
	newServer := func(token string) *Server {
		s, err := New(Config{Addr: "127.0.0.1:0", Token: token}, Deps{
			S3: srv.Client, Store: jobstore.New(srv.Client, srv.Bucket(t, "state")),
			InputBucket: srv.Bucket(t, "in"), OutputBucket: srv.Bucket(t, "out"), Metrics: metrics,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(s *Server, host, auth string) int {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Host = host
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		if w.Code == 200 && w.Body.String() != "conveyor_up 1\n" {
			t.Errorf("GET /metrics served %q", w.Body)
		}
		return w.Code
	}
	open := newServer("")
	if c := get(open, "127.0.0.1:9001", ""); c != 200 {
		t.Errorf("loopback, no token: %d, want 200", c)
	}
	if c := get(open, "evil.example:9001", ""); c != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host: %d, want 421", c)
	}
	const tok = "0123456789abcdef0123456789abcdef"
	locked := newServer(tok)
	for _, auth := range []string{"", "Bearer wrong-token-wrong-token", "Basic " + tok} {
		if c := get(locked, "10.0.0.5:9001", auth); c != http.StatusUnauthorized {
			t.Errorf("token set, Authorization %q: %d, want 401", auth, c)
		}
	}
	if c := get(locked, "10.0.0.5:9001", "Bearer "+tok); c != 200 {
		t.Errorf("the bearer token: %d, want 200", c)
	}
	// Without Deps.Metrics there is no such page.
	none, err := New(Config{Addr: "127.0.0.1:0"}, Deps{S3: srv.Client, Store: jobstore.New(srv.Client, srv.Bucket(t, "state2"))})
	if err != nil {
		t.Fatal(err)
	}
	if c := get(none, "127.0.0.1:9001", ""); c != http.StatusNotFound {
		t.Errorf("no metrics handler: %d, want 404", c)
	}
}
