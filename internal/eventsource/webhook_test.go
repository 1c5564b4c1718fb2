package eventsource

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// sample reads a store's real notification shape from s3event's testdata.
func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "s3event", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder collects what the handler handed on.
type recorder struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (r *recorder) handle(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, b)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func post(t *testing.T, url, auth string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	minio := sample(t, "minio-webhook.json")
	tests := []struct {
		name     string
		auth     string
		body     []byte
		status   int
		handled  bool
		saysWhat string
	}{
		{"MinIO put with the secret", "Bearer " + testSecret, minio, 200, true, "queued 1 object"},
		{"versitygw put with the secret", "Bearer " + testSecret, sample(t, "versitygw-nats.json"), 200, true, "queued 1 object"},
		{"no secret", "", minio, 401, false, "Authorization: Bearer"},
		{"wrong secret", "Bearer " + strings.Repeat("x", len(testSecret)), minio, 401, false, "wrong secret"},
		{"secret as a prefix", "Bearer " + testSecret[:20], minio, 401, false, "wrong secret"},
		{"secret without Bearer", testSecret, minio, 401, false, "wrong secret"},
		{"malformed JSON", "Bearer " + testSecret, []byte(`{"Records": [`), 400, false, "decode event"},
		{"not a notification", "Bearer " + testSecret, []byte(`{"hello":"world"}`), 400, false, "Records"},
		{"test event", "Bearer " + testSecret, sample(t, "test-event.json"), 200, false, "not an object-created event"},
		{"MinIO delete", "Bearer " + testSecret, sample(t, "minio-delete.json"), 200, false, "no object-created record"},
		{"huge body", "Bearer " + testSecret, bytes.Repeat([]byte(" "), DefaultMaxBody+1), 413, false, "send one notification per request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			srv := httptest.NewServer(NewWebhookHandler(WebhookConfig{Secret: testSecret}, rec.handle, t.Logf))
			defer srv.Close()
			status, body := post(t, srv.URL, tt.auth, tt.body)
			if status != tt.status || !strings.Contains(body, tt.saysWhat) {
				t.Errorf("status %d %q, want %d saying %q", status, body, tt.status, tt.saysWhat)
			}
			if got := rec.count(); (got == 1) != tt.handled || got > 1 {
				t.Errorf("%d bodies handed on, want handled=%v", got, tt.handled)
			}
			if tt.handled && !bytes.Equal(rec.bodies[0], tt.body) {
				t.Error("the body handed on differs from the one posted")
			}
		})
	}
}

func TestWebhookMethods(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := httptest.NewServer(NewWebhookHandler(WebhookConfig{Secret: testSecret}, rec.handle, nil))
	defer srv.Close()
	for method, want := range map[string]int{http.MethodHead: 200, http.MethodGet: 405, http.MethodPut: 405} {
		req, _ := http.NewRequest(method, srv.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", method, resp.StatusCode, want)
		}
	}
	if rec.count() != 0 {
		t.Error("a request other than POST was handed on")
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  WebhookConfig
		want string
	}{
		{WebhookConfig{}, "at least 16 characters"},
		{WebhookConfig{Secret: "short"}, "openssl rand"},
		{WebhookConfig{Secret: testSecret + " x"}, "spaces"},
		{WebhookConfig{Secret: testSecret, Path: "events"}, "must start with /"},
		{WebhookConfig{Secret: testSecret, Addr: "9002"}, "HOST:PORT"},
		{WebhookConfig{Secret: testSecret, MaxBody: 10}, "at least 1024"},
	}
	for _, tt := range tests {
		err := tt.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error saying %q", tt.cfg, err, tt.want)
		}
	}
	if err := (WebhookConfig{Secret: testSecret}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults with a secret: %v", err)
	}
}

// The started endpoint listens on loopback by default, at the documented
// path, and nowhere else on the server.
func TestStartWebhook(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h, err := StartWebhook(WebhookConfig{Addr: "127.0.0.1:0", Secret: testSecret}, rec.handle, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	if !strings.HasPrefix(h.URL(), "http://127.0.0.1:") || !strings.HasSuffix(h.URL(), DefaultWebhookPath) {
		t.Fatalf("URL %s: want loopback and path %s", h.URL(), DefaultWebhookPath)
	}
	if status, body := post(t, h.URL(), "Bearer "+testSecret, sample(t, "minio-webhook.json")); status != 200 {
		t.Fatalf("status %d %s", status, body)
	}
	other := strings.TrimSuffix(h.URL(), DefaultWebhookPath) + "/other"
	if status, _ := post(t, other, "Bearer "+testSecret, sample(t, "minio-webhook.json")); status != 404 {
		t.Errorf("POST to another path: status %d, want 404", status)
	}
	if rec.count() != 1 {
		t.Errorf("%d bodies handed on, want 1", rec.count())
	}
	if _, err := StartWebhook(WebhookConfig{Addr: "127.0.0.1:0", Secret: "short"}, rec.handle, nil); err == nil {
		t.Error("a short secret was accepted")
	}
}
